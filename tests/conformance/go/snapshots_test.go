package conformance

import (
	"context"
	"fmt"
	"testing"
	"time"

	leasesapi "github.com/containerd/containerd/api/services/leases/v1"
	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/leases"
	leasesproxy "github.com/containerd/containerd/leases/proxy"
	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/snapshots"
	snapshotsproxy "github.com/containerd/containerd/snapshots/proxy"
	"github.com/containerd/containerd/snapshots/testsuite"
	"google.golang.org/grpc"
)

func TestSnapshotsOverlayfs(t *testing.T) { runSnapshotSuite(t, "overlayfs") }

func TestSnapshotsNative(t *testing.T) { runSnapshotSuite(t, "native") }

// runSnapshotSuite runs containerd's snapshotter suite through snapshots/proxy against the
// daemon's snapshotter `name`. The suite mounts what the daemon returns in this process, as
// containerd's own client does (so it needs root on the daemon's machine).
func runSnapshotSuite(t *testing.T, name string) {
	c := daemonConn(t)
	testsuite.SnapshotterSuite(t, name, func(ctx context.Context, _ string) (snapshots.Snapshotter, func() error, error) {
		// The suite runs its tests in parallel, all in namespace "testsuite"; a namespace and
		// a lease per test give each the fresh snapshotter it expects (Walk sees only its own
		// snapshots, and no collection triggered by another test removes an unlabelled one).
		ns := newNamespace("snapshots-" + name)
		lm := leasesproxy.NewLeaseManager(leasesapi.NewLeasesClient(c))
		nsCtx := namespaces.WithNamespace(context.Background(), ns)
		l, err := lm.Create(nsCtx, leases.WithRandomID(), leases.WithExpiration(time.Hour))
		if err != nil {
			return nil, nil, err
		}
		sn := &scoped{
			Snapshotter: snapshotsproxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(c), name),
			ns:          ns,
			lease:       l.ID,
		}
		return sn, func() error { return releaseSnapshots(nsCtx, c, sn, lm, l, ns) }, nil
	})
}

// scoped moves every call into the test's namespace, under its lease.
type scoped struct {
	snapshots.Snapshotter
	ns, lease string
}

func (s *scoped) ctx(ctx context.Context) context.Context {
	return leases.WithLease(namespaces.WithNamespace(ctx, s.ns), s.lease)
}

func (s *scoped) Stat(ctx context.Context, key string) (snapshots.Info, error) {
	return s.Snapshotter.Stat(s.ctx(ctx), key)
}

func (s *scoped) Update(ctx context.Context, info snapshots.Info, fieldpaths ...string) (snapshots.Info, error) {
	return s.Snapshotter.Update(s.ctx(ctx), info, fieldpaths...)
}

func (s *scoped) Usage(ctx context.Context, key string) (snapshots.Usage, error) {
	return s.Snapshotter.Usage(s.ctx(ctx), key)
}

func (s *scoped) Mounts(ctx context.Context, key string) ([]mount.Mount, error) {
	return s.Snapshotter.Mounts(s.ctx(ctx), key)
}

func (s *scoped) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	return s.Snapshotter.Prepare(s.ctx(ctx), key, parent, opts...)
}

func (s *scoped) View(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	return s.Snapshotter.View(s.ctx(ctx), key, parent, opts...)
}

func (s *scoped) Commit(ctx context.Context, name, key string, opts ...snapshots.Opt) error {
	return s.Snapshotter.Commit(s.ctx(ctx), name, key, opts...)
}

func (s *scoped) Remove(ctx context.Context, key string) error {
	return s.Snapshotter.Remove(s.ctx(ctx), key)
}

func (s *scoped) Walk(ctx context.Context, fn snapshots.WalkFunc, filters ...string) error {
	return s.Snapshotter.Walk(s.ctx(ctx), fn, filters...)
}

// releaseSnapshots removes what a test left (children before parents), deletes its lease
// synchronously and then its namespace.
func releaseSnapshots(ctx context.Context, c *grpc.ClientConn, sn *scoped, lm leases.Manager, l leases.Lease, ns string) error {
	for {
		var keys []string
		if err := sn.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
			keys = append(keys, info.Name)
			return nil
		}); err != nil {
			return fmt.Errorf("listing snapshots: %w", err)
		}
		if len(keys) == 0 {
			break
		}
		removed := 0
		for _, key := range keys {
			err := sn.Remove(ctx, key)
			switch {
			case err == nil || errdefs.IsNotFound(err):
				removed++
			case errdefs.IsFailedPrecondition(err): // has children: next round
			default:
				return fmt.Errorf("removing snapshot %s: %w", key, err)
			}
		}
		if removed == 0 {
			return fmt.Errorf("snapshots %v cannot be removed", keys)
		}
	}
	if err := lm.Delete(ctx, l, leases.SynchronousDelete); err != nil {
		return fmt.Errorf("deleting lease %s: %w", l.ID, err)
	}
	return deleteNamespace(ctx, c, ns)
}
