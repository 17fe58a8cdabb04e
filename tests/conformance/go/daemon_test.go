// Package conformance runs containerd's own conformance suites (content/testsuite and
// snapshots/testsuite, from Debian's golang-github-containerd-containerd-dev) against a
// running dockyardd, through containerd's gRPC proxies: the same client code ctr uses.
//
// The daemon's socket comes from DOCKYARD_ADDRESS (tests/conformance/test_containerd_suites.py
// starts a daemon and builds this package in GOPATH mode). Every test works in namespaces of
// its own, made unique per run, and removes everything it made, so the suites can run again
// and again against one daemon.
package conformance

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	namespacesapi "github.com/containerd/containerd/api/services/namespaces/v1"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/pkg/dialer"
	"google.golang.org/grpc"
)

const addressEnv = "DOCKYARD_ADDRESS"

var (
	connOnce sync.Once
	conn     *grpc.ClientConn
	connErr  error

	// runID keeps this run's namespaces apart from those of earlier runs on the same daemon.
	runID   = randomHex(4)
	nsCount uint64
)

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// daemonConn is one gRPC connection to the daemon, shared by every test (as a containerd
// client shares one).
func daemonConn(t *testing.T) *grpc.ClientConn {
	t.Helper()
	address := os.Getenv(addressEnv)
	if address == "" {
		t.Fatalf("%s must name the socket of a running dockyardd", addressEnv)
	}
	connOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, connErr = grpc.DialContext(ctx, dialer.DialAddress(address),
			grpc.WithInsecure(), grpc.WithBlock(), grpc.WithContextDialer(dialer.ContextDialer),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20), grpc.MaxCallSendMsgSize(16<<20)))
	})
	if connErr != nil {
		t.Fatalf("connecting to dockyardd at %s: %v", address, connErr)
	}
	return conn
}

// newNamespace names a namespace no other test or run uses.
func newNamespace(kind string) string {
	return fmt.Sprintf("conformance-%s-%s-%d", kind, runID, atomic.AddUint64(&nsCount, 1))
}

// deleteNamespace removes a namespace the test emptied; one never created is fine.
func deleteNamespace(ctx context.Context, c *grpc.ClientConn, name string) error {
	_, err := namespacesapi.NewNamespacesClient(c).Delete(ctx, &namespacesapi.DeleteNamespaceRequest{Name: name})
	if err != nil && !errdefs.IsNotFound(errdefs.FromGRPC(err)) {
		return fmt.Errorf("deleting namespace %s: %w", name, errdefs.FromGRPC(err))
	}
	return nil
}
