package e2e

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/evictguard/evictguard/lease"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/evictguard/evictguard/e2e/harness"
	"github.com/evictguard/evictguard/internal/kube"
)

// Environment of a lease contender (this test binary re-executed; see TestRemediateLeaseChild).
const (
	envLeaseNode       = "EVICTGUARD_E2E_LEASE_NODE"
	envLeaseKubeconfig = "EVICTGUARD_E2E_LEASE_KUBECONFIG"
	envLeaseRounds     = "EVICTGUARD_E2E_LEASE_ROUNDS"
	envLeaseCrash      = "EVICTGUARD_E2E_LEASE_CRASH"
)

const (
	leaseSlots = 2
	leaseTTL   = 3 * time.Second
	leaseHold  = time.Second // how long a contender "restarts its kubelet"
)

func leaseLock(c kube.Interface, node string) *lease.Lock {
	return &lease.Lock{Client: c, Namespace: "kube-system", Name: "evictguard-restart", Slots: leaseSlots, TTL: leaseTTL, Identity: node}
}

// TestRemediateLeaseChild is one contender, run only as a re-executed child of
// TestRemediateLeaseConcurrency: with the product's lease.Lock against the real API server it
// takes a slot (retrying with jitter while all are held), holds it as long as a restart would
// take, releases it, and prints "HELD slot startNanos endNanos" per round. With
// EVICTGUARD_E2E_LEASE_CRASH it prints "ACQUIRED slot nanos" and SIGKILLs itself holding it.
func TestRemediateLeaseChild(t *testing.T) {
	node := os.Getenv(envLeaseNode)
	if node == "" {
		t.Skip("only run as a child of TestRemediateLeaseConcurrency")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", os.Getenv(envLeaseKubeconfig))
	if err != nil {
		t.Fatal(err)
	}
	c, err := kube.NewClient(cfg) // the product's client, as apply and migrate use it
	if err != nil {
		t.Fatal(err)
	}
	rounds, _ := strconv.Atoi(os.Getenv(envLeaseRounds))
	lock := leaseLock(c, node)
	ctx := context.Background()
	for range max(rounds, 1) {
		var slot string
		var tried time.Time
		for slot == "" {
			tried = time.Now() // no earlier than the lease's renewTime
			s, _, err := lock.Acquire(ctx)
			if err != nil {
				t.Fatalf("acquire: %v", err)
			}
			if slot = s; slot == "" {
				time.Sleep(time.Duration(20+rand.IntN(60)) * time.Millisecond)
			}
		}
		start := time.Now()
		if os.Getenv(envLeaseCrash) != "" {
			fmt.Printf("ACQUIRED %s %d\n", slot, tried.UnixNano())
			_ = os.Stdout.Sync()
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
		time.Sleep(leaseHold)
		end := time.Now()
		if err := lock.Release(ctx, slot); err != nil {
			t.Fatalf("release: %v", err)
		}
		fmt.Printf("HELD %s %d %d\n", slot, start.UnixNano(), end.UnixNano())
	}
}

type holdInterval struct {
	node, slot string
	start, end time.Time
}

// TestRemediateLeaseConcurrency runs five contenders — separate processes with different node
// names, each driving the product's lease.Lock against a real kube-apiserver with 2 slots — and
// samples the Leases every 100 ms: never more than 2 are held at once, and the holders' own
// hold intervals never overlap more than 2 deep. One contender is SIGKILLed while holding a
// slot; once its TTL runs out the others take that slot over, and all finish.
func TestRemediateLeaseConcurrency(t *testing.T) {
	start := time.Now()
	api := harness.StartAPIServer(t)
	const rounds = 3
	var (
		mu        sync.Mutex
		intervals []holdInterval
		wg        sync.WaitGroup
		errs      []string
	)
	run := func(node string, crash bool, acquired chan<- holdInterval) {
		defer wg.Done()
		cmd := exec.Command(os.Args[0], "-test.run=^TestRemediateLeaseChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), envLeaseNode+"="+node, envLeaseKubeconfig+"="+api.Kubeconfig, envLeaseRounds+"="+strconv.Itoa(rounds))
		if crash {
			cmd.Env = append(cmd.Env, envLeaseCrash+"=1")
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Error(err)
			return
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Error(err)
			return
		}
		sc := bufio.NewScanner(out)
		var log []string
		for sc.Scan() {
			log = append(log, sc.Text())
			f := strings.Fields(sc.Text())
			switch {
			case len(f) == 4 && f[0] == "HELD":
				s, _ := strconv.ParseInt(f[2], 10, 64)
				e, _ := strconv.ParseInt(f[3], 10, 64)
				mu.Lock()
				intervals = append(intervals, holdInterval{node, f[1], time.Unix(0, s), time.Unix(0, e)})
				mu.Unlock()
			case len(f) == 3 && f[0] == "ACQUIRED":
				s, _ := strconv.ParseInt(f[2], 10, 64)
				// Held, as far as anyone else can tell, until the lease expires.
				iv := holdInterval{node, f[1], time.Unix(0, s), time.Unix(0, s).Add(leaseTTL)}
				mu.Lock()
				intervals = append(intervals, iv)
				mu.Unlock()
				acquired <- iv
			}
		}
		err = cmd.Wait()
		mu.Lock()
		defer mu.Unlock()
		if crash {
			if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
				errs = append(errs, fmt.Sprintf("%s: want SIGKILL, got %v\n%s\n%s", node, err, strings.Join(log, "\n"), stderr.String()))
			}
			return
		}
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v\n%s\n%s", node, err, strings.Join(log, "\n"), tail(stderr.String(), 2000)))
		}
	}

	// Sample the Leases as the API server sees them.
	ctx, stopSampling := context.WithCancel(context.Background())
	samplerDone := make(chan struct{})
	maxHeld, samples, atTwo := 0, 0, 0
	go func() {
		defer close(samplerDone)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			ls, err := api.Client.CoordinationV1().Leases("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=evictguard"})
			if err != nil {
				continue
			}
			now, held := time.Now(), 0
			for _, l := range ls.Items {
				if l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity != "" && l.Spec.RenewTime != nil && l.Spec.LeaseDurationSeconds != nil &&
					now.Before(l.Spec.RenewTime.Add(time.Duration(*l.Spec.LeaseDurationSeconds)*time.Second)) {
					held++
				}
			}
			samples++
			maxHeld = max(maxHeld, held)
			if held == leaseSlots {
				atTwo++
			}
		}
	}()

	// The crashing contender goes first, so that its slot must be taken over.
	crashed := make(chan holdInterval, 1)
	wg.Add(1)
	go run("node-0", true, crashed)
	var dead holdInterval
	select {
	case dead = <-crashed:
	case <-time.After(60 * time.Second):
		t.Fatal("the crashing contender never acquired a slot")
	}
	for i := 1; i < 5; i++ {
		wg.Add(1)
		go run(fmt.Sprintf("node-%d", i), false, nil)
	}
	wg.Wait()
	stopSampling()
	<-samplerDone

	for _, e := range errs {
		t.Error(e)
	}
	if want := 4*rounds + 1; len(intervals) != want {
		t.Errorf("%d holds recorded, want %d", len(intervals), want)
	}
	if maxHeld > leaseSlots {
		t.Errorf("up to %d Leases held at once in the API server, limit %d", maxHeld, leaseSlots)
	}
	if atTwo == 0 {
		t.Errorf("never saw %d Leases held at once in %d samples: no contention was exercised", leaseSlots, samples)
	}
	if depth, at := maxOverlap(intervals); depth > leaseSlots {
		t.Errorf("the contenders' own hold intervals overlap %d deep at %s, limit %d", depth, at.Format(time.RFC3339Nano), leaseSlots)
	}
	takenOver := false
	for _, iv := range intervals {
		if iv.slot == dead.slot && iv.node != dead.node {
			if iv.start.Before(dead.end) {
				t.Errorf("%s took %s at %s, before the crashed holder's lease expired (%s)", iv.node, iv.slot, iv.start.Format(time.RFC3339Nano), dead.end.Format(time.RFC3339Nano))
			}
			takenOver = true
		}
	}
	if !takenOver {
		t.Errorf("nobody took over %s after %s died holding it", dead.slot, dead.node)
	}
	t.Logf("5 contenders, %d slots: %d holds, %d samples (%d at the limit), max held %d; %s", leaseSlots, len(intervals), samples, atTwo, maxHeld, time.Since(start).Round(time.Second))
}

// maxOverlap is the largest number of intervals covering one instant, and that instant.
func maxOverlap(ivs []holdInterval) (int, time.Time) {
	type edge struct {
		at time.Time
		d  int
	}
	var es []edge
	for _, iv := range ivs {
		es = append(es, edge{iv.start, +1}, edge{iv.end, -1})
	}
	// Ends sort before starts at the same instant: a release followed by a take is no overlap.
	slices.SortFunc(es, func(a, b edge) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return a.d - b.d
	})
	depth, best, at := 0, 0, time.Time{}
	for _, e := range es {
		depth += e.d
		if depth > best {
			best, at = depth, e.at
		}
	}
	return best, at
}
