package conformance

import (
	"context"
	"fmt"
	"testing"
	"time"

	contentapi "github.com/containerd/containerd/api/services/content/v1"
	leasesapi "github.com/containerd/containerd/api/services/leases/v1"
	"github.com/containerd/containerd/content"
	contentproxy "github.com/containerd/containerd/content/proxy"
	"github.com/containerd/containerd/content/testsuite"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/leases"
	leasesproxy "github.com/containerd/containerd/leases/proxy"
	"github.com/containerd/containerd/namespaces"
	"google.golang.org/grpc"
)

// TestContentSuite runs containerd's content store suite through content/proxy, the way
// containerd's integration/client/content_test.go runs it against containerd: each test
// context gets a namespace and a lease of its own.
func TestContentSuite(t *testing.T) {
	c := daemonConn(t)
	testsuite.ContentSuite(t, "Dockyard", func(ctx context.Context, _ string) (context.Context, content.Store, func() error, error) {
		cs := contentproxy.NewContentStore(contentapi.NewContentClient(c))
		lm := leasesproxy.NewLeaseManager(leasesapi.NewLeasesClient(c))
		wrap := func(ctx context.Context) (context.Context, func(context.Context) error, error) {
			ns := newNamespace("content")
			ctx = namespaces.WithNamespace(ctx, ns)
			l, err := lm.Create(ctx, leases.WithRandomID(), leases.WithExpiration(time.Hour))
			if err != nil {
				return nil, nil, err
			}
			return leases.WithLease(ctx, l.ID), func(ctx context.Context) error {
				return releaseContent(ctx, c, cs, lm, l, ns)
			}, nil
		}
		// Nothing to clean up per store: every wrapped context releases what it made.
		return testsuite.SetContextWrapper(ctx, wrap), cs, func() error { return nil }, nil
	})
}

// releaseContent empties a test's namespace: aborts its ingests, deletes its content, and
// deletes its lease synchronously, so the daemon collects the blobs before the next test (or
// run: the suite's content is the same bytes every run) could find them shared.
func releaseContent(ctx context.Context, c *grpc.ClientConn, cs content.Store, lm leases.Manager, l leases.Lease, ns string) error {
	statuses, err := cs.ListStatuses(ctx)
	if err != nil {
		return fmt.Errorf("listing ingests: %w", err)
	}
	for _, st := range statuses {
		if err := cs.Abort(ctx, st.Ref); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("aborting %s: %w", st.Ref, err)
		}
	}
	if err := cs.Walk(ctx, func(info content.Info) error {
		if err := cs.Delete(ctx, info.Digest); err != nil && !errdefs.IsNotFound(err) {
			return err
		}
		return nil
	}); err != nil {
		return fmt.Errorf("deleting content: %w", err)
	}
	if err := lm.Delete(ctx, l, leases.SynchronousDelete); err != nil {
		return fmt.Errorf("deleting lease %s: %w", l.ID, err)
	}
	// What the suite left must be gone now, not merely unlisted.
	if left, err := cs.ListStatuses(ctx); err != nil || len(left) != 0 {
		return fmt.Errorf("ingests left after abort: %v (%v)", left, err)
	}
	return deleteNamespace(ctx, c, ns)
}
