// A client-go leader-election candidate for lease-store-k8s's interoperability test
// (tests/clientgo_interop.rs): client-go's examples/leader-election/main.go with the timings as
// flags and every leadership change printed on stdout, one line each:
//
//	STARTED <id>     OnStartedLeading
//	STOPPED <id>     OnStoppedLeading
//	LEADER <id>      OnNewLeader (any identity, this one included)
//
// It releases the lease (ReleaseOnCancel) on SIGTERM or when stdin closes, then exits.
// Build it with tests/clientgo/build.sh, inside Kubernetes v1.20.2's source tree.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientset "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"
)

func say(format string, args ...interface{}) {
	fmt.Fprintf(os.Stdout, format+"\n", args...)
	os.Stdout.Sync()
}

func main() {
	klog.InitFlags(nil)
	var kubeconfig, name, namespace, id string
	var leaseDuration, renewDeadline, retryPeriod time.Duration
	flag.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file")
	flag.StringVar(&id, "id", "", "the holder identity")
	flag.StringVar(&name, "lease-lock-name", "", "the Lease object's name")
	flag.StringVar(&namespace, "lease-lock-namespace", "", "the Lease object's namespace")
	flag.DurationVar(&leaseDuration, "lease-duration", 15*time.Second, "LeaseDuration")
	flag.DurationVar(&renewDeadline, "renew-deadline", 10*time.Second, "RenewDeadline")
	flag.DurationVar(&retryPeriod, "retry-period", 2*time.Second, "RetryPeriod")
	flag.Parse()
	if id == "" || name == "" || namespace == "" || kubeconfig == "" {
		klog.Fatal("-id, -lease-lock-name, -lease-lock-namespace and -kubeconfig are required")
	}
	config, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		klog.Fatal(err)
	}
	client := clientset.NewForConfigOrDie(config)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ch
		cancel()
	}()
	go func() {
		io.Copy(io.Discard, os.Stdin)
		cancel()
	}()

	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Name: name, Namespace: namespace},
		Client:     client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: id},
	}
	say("READY %s", id)
	leaderelection.RunOrDie(ctx, leaderelection.LeaderElectionConfig{
		Lock:            lock,
		ReleaseOnCancel: true,
		LeaseDuration:   leaseDuration,
		RenewDeadline:   renewDeadline,
		RetryPeriod:     retryPeriod,
		Name:            name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				say("STARTED %s", id)
				<-ctx.Done()
			},
			OnStoppedLeading: func() {
				say("STOPPED %s", id)
			},
			OnNewLeader: func(identity string) {
				say("LEADER %s", identity)
			},
		},
	})
	say("EXIT %s", id)
}
