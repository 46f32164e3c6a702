module tessera/benches/go/sched

go 1.19
