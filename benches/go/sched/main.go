// Go reference programs for the scheduler workloads of BENCHMARKS.md. Written for this
// project from the workload descriptions. Each prints "name ns/op value" lines (or RSS
// figures for parked), the median of several repetitions.
//
//	go run . spawn-join | spawn-all N... | ping-pong | yield | chan-buffered | select K... | select-many | parked [N] | fairness [seconds] | timers [N]
//
// GOMAXPROCS is taken from the environment (the runner sets it).
package main

import (
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const reps = 7

func median(f func() float64) float64 {
	var xs []float64
	for i := 0; i < reps; i++ {
		xs = append(xs, f())
	}
	sort.Float64s(xs)
	return xs[len(xs)/2]
}

// spawnJoin: spawn 1,000,000 empty goroutines in batches of 1000 and wait for each batch.
func spawnJoin() float64 {
	const total, batch = 1000000, 1000
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < total/batch; i++ {
		wg.Add(batch)
		for j := 0; j < batch; j++ {
			go func() { wg.Done() }()
		}
		wg.Wait()
	}
	return float64(time.Since(start).Nanoseconds()) / total
}

// spawnAll (issue #17): spawn n goroutines, all of them before waiting for any (Go's
// WaitGroup shape; a tessera program keeps every JoinHandle and joins them all), repeated
// until at least 100,000 goroutines were spawned, so that N = 1,000 is not timed on a
// single burst.
func spawnAll(n int) float64 {
	rounds := (100000 + n - 1) / n
	start := time.Now()
	var wg sync.WaitGroup
	for r := 0; r < rounds; r++ {
		wg.Add(n)
		for i := 0; i < n; i++ {
			go func() { wg.Done() }()
		}
		wg.Wait()
	}
	return float64(time.Since(start).Nanoseconds()) / float64(rounds*n)
}

// countName: 1000 -> 1k, 100000 -> 100k, 1000000 -> 1m (the runner's row names).
func countName(n int) string {
	switch {
	case n >= 1000000 && n%1000000 == 0:
		return fmt.Sprintf("%dm", n/1000000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return strconv.Itoa(n)
}

// pingPong: round trips over two unbuffered channels.
func pingPong() float64 {
	const n = 200000
	ping, pong := make(chan int), make(chan int)
	go func() {
		for v := range ping {
			pong <- v + 1
		}
	}()
	start := time.Now()
	v := 0
	for i := 0; i < n; i++ {
		ping <- v
		v = <-pong
	}
	el := time.Since(start)
	close(ping)
	return float64(el.Nanoseconds()) / n
}

// yieldSwitch: two goroutines on one P yield to each other: ns per switch.
func yieldSwitch() float64 {
	const n = 1000000
	prev := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(prev)
	var wg sync.WaitGroup
	wg.Add(2)
	start := time.Now()
	for k := 0; k < 2; k++ {
		go func() {
			for i := 0; i < n; i++ {
				runtime.Gosched()
			}
			wg.Done()
		}()
	}
	wg.Wait()
	return float64(time.Since(start).Nanoseconds()) / (2 * n)
}

// chanBuffered (issue #17): one producer sends n values over a channel of capacity 64 and
// closes it; the main goroutine receives until it is closed. ns per message.
func chanBuffered() float64 {
	const n = 1000000
	ch := make(chan int, 64)
	start := time.Now()
	go func() {
		for i := 0; i < n; i++ {
			ch <- i
		}
		close(ch)
	}()
	sum := 0
	for v := range ch {
		sum += v
	}
	el := time.Since(start)
	if sum != n*(n-1)/2 {
		panic("chan-buffered: lost messages")
	}
	return float64(el.Nanoseconds()) / n
}

// selectK (issue #17): k producers each send n/k values on an unbuffered channel of their
// own; the main goroutine selects over all k until it has them all. ns per message. k is
// 2 or 8 (a select's cases are written out, as a program would).
func selectK(k int) float64 {
	const n = 200000
	per := n / k
	c := make([]chan int, 8)
	for i := range c {
		c[i] = make(chan int)
	}
	start := time.Now()
	for i := 0; i < k; i++ {
		go func(ch chan int) {
			for v := 0; v < per; v++ {
				ch <- v
			}
		}(c[i])
	}
	sum := 0
	for m := 0; m < per*k; m++ {
		if k == 2 {
			select {
			case v := <-c[0]:
				sum += v
			case v := <-c[1]:
				sum += v
			}
			continue
		}
		select {
		case v := <-c[0]:
			sum += v
		case v := <-c[1]:
			sum += v
		case v := <-c[2]:
			sum += v
		case v := <-c[3]:
			sum += v
		case v := <-c[4]:
			sum += v
		case v := <-c[5]:
			sum += v
		case v := <-c[6]:
			sum += v
		case v := <-c[7]:
			sum += v
		}
	}
	el := time.Since(start)
	if sum != k*(per*(per-1)/2) {
		panic("select: lost messages")
	}
	return float64(el.Nanoseconds()) / float64(per*k)
}

// selectMany (issue #14): selectWorkers goroutines each loop in a select over the same
// selectArms unbuffered channels plus a 100 ms timeout; one producer sends selectMsgs values
// round-robin and then says it is done, and each worker leaves at its next timeout after
// that. ns per message, from the first spawn to the last worker's exit, so the figure holds
// one 100 ms wave of timeouts in which every worker leaves all its channels' queues at
// once; every queue holds up to selectWorkers waiters.
const selectWorkers, selectArms, selectMsgs = 2000, 31, 9300

func selectMany() float64 {
	var c [selectArms]chan int
	for i := range c {
		c[i] = make(chan int)
	}
	var got int64
	var done int32
	var wg sync.WaitGroup
	start := time.Now()
	wg.Add(selectWorkers)
	for w := 0; w < selectWorkers; w++ {
		go func() {
			defer wg.Done()
			take := func(_ int, ok bool) {
				if !ok {
					panic("select-many: a channel closed")
				}
				atomic.AddInt64(&got, 1)
			}
			for {
				select {
				case v, ok := <-c[0]:
					take(v, ok)
				case v, ok := <-c[1]:
					take(v, ok)
				case v, ok := <-c[2]:
					take(v, ok)
				case v, ok := <-c[3]:
					take(v, ok)
				case v, ok := <-c[4]:
					take(v, ok)
				case v, ok := <-c[5]:
					take(v, ok)
				case v, ok := <-c[6]:
					take(v, ok)
				case v, ok := <-c[7]:
					take(v, ok)
				case v, ok := <-c[8]:
					take(v, ok)
				case v, ok := <-c[9]:
					take(v, ok)
				case v, ok := <-c[10]:
					take(v, ok)
				case v, ok := <-c[11]:
					take(v, ok)
				case v, ok := <-c[12]:
					take(v, ok)
				case v, ok := <-c[13]:
					take(v, ok)
				case v, ok := <-c[14]:
					take(v, ok)
				case v, ok := <-c[15]:
					take(v, ok)
				case v, ok := <-c[16]:
					take(v, ok)
				case v, ok := <-c[17]:
					take(v, ok)
				case v, ok := <-c[18]:
					take(v, ok)
				case v, ok := <-c[19]:
					take(v, ok)
				case v, ok := <-c[20]:
					take(v, ok)
				case v, ok := <-c[21]:
					take(v, ok)
				case v, ok := <-c[22]:
					take(v, ok)
				case v, ok := <-c[23]:
					take(v, ok)
				case v, ok := <-c[24]:
					take(v, ok)
				case v, ok := <-c[25]:
					take(v, ok)
				case v, ok := <-c[26]:
					take(v, ok)
				case v, ok := <-c[27]:
					take(v, ok)
				case v, ok := <-c[28]:
					take(v, ok)
				case v, ok := <-c[29]:
					take(v, ok)
				case v, ok := <-c[30]:
					take(v, ok)
				case <-time.After(100 * time.Millisecond):
					if atomic.LoadInt32(&done) == 1 {
						return
					}
				}
			}
		}()
	}
	for i := 0; i < selectMsgs; i++ {
		c[i%selectArms] <- i
	}
	atomic.StoreInt32(&done, 1)
	wg.Wait()
	el := time.Since(start)
	if got != selectMsgs {
		panic(fmt.Sprintf("select-many: %d of %d messages received", got, selectMsgs))
	}
	return float64(el.Nanoseconds()) / selectMsgs
}

func rssKiB() int {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			v, _ := strconv.Atoi(f[1])
			return v
		}
	}
	return 0
}

func vmas() int {
	b, _ := os.ReadFile("/proc/self/maps")
	return strings.Count(string(b), "\n")
}

// parked: n goroutines blocked receiving on one channel.
func parked(n int) {
	runtime.GC()
	before, vBefore := rssKiB(), vmas()
	ch := make(chan struct{})
	var started sync.WaitGroup
	started.Add(n)
	for i := 0; i < n; i++ {
		go func() {
			started.Done()
			<-ch
		}()
	}
	started.Wait()
	for runtime.NumGoroutine() < n {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	after, vAfter := rssKiB(), vmas()
	fmt.Printf("parked %d rss_per_g_bytes %d vmas %d->%d\n", n, (after-before)*1024/n, vBefore, vAfter)
	close(ch)
}

// fairness: issue #14's starvation reproducer. A pair hands the P back and forth over
// unbuffered channels, a third goroutine yields in a loop, and after 100 ms one of the
// pair spawns a fourth just before it receives. Prints the yielder's iterations, the spawned goroutine's start
// latency and the pair's hand-offs (the same as `--example fairness` of tessera-sched).
func fairness(secs float64) {
	var stop atomic.Bool
	var yields, handoffs, startNs atomic.Int64
	t0 := time.Now()
	ping, pong := make(chan int), make(chan int)
	go func() {
		v := 0
		for !stop.Load() {
			ping <- v
			v = <-pong
		}
		close(ping)
	}()
	go func() {
		spawned := false
		for {
			n := handoffs.Add(2) - 2
			if !spawned && n%1024 == 0 && time.Since(t0) >= 100*time.Millisecond {
				spawned = true
				at := time.Now()
				go func() { startNs.Store(time.Since(at).Nanoseconds() + 1) }()
			}
			v, ok := <-ping
			if !ok {
				return
			}
			pong <- v + 1
		}
	}()
	go func() {
		for !stop.Load() {
			runtime.Gosched()
			yields.Add(1)
		}
	}()
	time.Sleep(time.Duration(secs * float64(time.Second)))
	y, lat, h := yields.Load(), startNs.Load(), handoffs.Load()
	stop.Store(true)
	start := fmt.Sprintf("not started after %.1f s", secs-0.1)
	if lat != 0 {
		start = fmt.Sprintf("%.2f ms", float64(lat-1)/1e6)
	}
	fmt.Printf("go procs=%d %g s: yielder iterations %d, spawned goroutine start %s, pair hand-offs %d\n",
		runtime.GOMAXPROCS(0), secs, y, start, h)
}

// timers: n goroutines each sleep 1-100 ms once (the same durations as the Rust runner's
// sched_timers.rs); prints the process's CPU time and how late the sleeps ended.
func timers(n int) {
	cpu := func() time.Duration {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	before := cpu()
	late := make([]int64, n)
	var wg sync.WaitGroup
	wg.Add(n)
	for i := 0; i < n; i++ {
		go func(i int) {
			d := time.Duration(1+((uint64(i)*2654435761)>>7)%100) * time.Millisecond
			start := time.Now()
			time.Sleep(d)
			late[i] = int64(time.Since(start) - d)
			if late[i] < 0 {
				late[i] = 0
			}
			wg.Done()
		}(i)
	}
	wg.Wait()
	used := cpu() - before
	sort.Slice(late, func(a, b int) bool { return late[a] < late[b] })
	pct := func(q float64) float64 { return float64(late[int(float64(n-1)*q)]) / 1e3 }
	fmt.Printf("go timers %d cpu_ms %.1f late_p50_us %.1f late_p99_us %.1f late_max_us %.1f\n",
		n, float64(used.Nanoseconds())/1e6, pct(0.5), pct(0.99), pct(1.0))
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: sched spawn-join|spawn-all N...|ping-pong|yield|chan-buffered|select K...|select-many|parked [N]|fairness [seconds]|timers [N]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "spawn-join":
		fmt.Printf("spawn-join ns/op %.1f\n", median(spawnJoin))
	case "spawn-all":
		for _, a := range os.Args[2:] {
			n, err := strconv.Atoi(a)
			if err != nil || n <= 0 {
				fmt.Fprintln(os.Stderr, "spawn-all: not a count:", a)
				os.Exit(2)
			}
			fmt.Printf("spawn-all-%s-%dp ns/op %.1f\n", countName(n), runtime.GOMAXPROCS(0),
				median(func() float64 { return spawnAll(n) }))
		}
	case "ping-pong":
		fmt.Printf("ping-pong-%dp ns/op %.1f\n", runtime.GOMAXPROCS(0), median(pingPong))
	case "yield":
		fmt.Printf("yield ns/op %.1f\n", median(yieldSwitch))
	case "chan-buffered":
		fmt.Printf("chan-buffered ns/op %.1f\n", median(chanBuffered))
	case "select":
		for _, a := range os.Args[2:] {
			k, err := strconv.Atoi(a)
			if err != nil || (k != 2 && k != 8) {
				fmt.Fprintln(os.Stderr, "select: 2 or 8 channels, not", a)
				os.Exit(2)
			}
			fmt.Printf("select-%d ns/op %.1f\n", k, median(func() float64 { return selectK(k) }))
		}
	case "select-many":
		fmt.Printf("select-many ns/op %.1f\n", median(selectMany))
	case "parked":
		n := 1000000
		if len(os.Args) > 2 {
			n, _ = strconv.Atoi(os.Args[2])
		}
		parked(n)
	case "timers":
		n := 100000
		if len(os.Args) > 2 {
			n, _ = strconv.Atoi(os.Args[2])
		}
		timers(n)
	case "fairness":
		secs := 3.0
		if len(os.Args) > 2 {
			secs, _ = strconv.ParseFloat(os.Args[2], 64)
		}
		fairness(secs)
	default:
		fmt.Fprintln(os.Stderr, "unknown workload", os.Args[1])
		os.Exit(2)
	}
}
