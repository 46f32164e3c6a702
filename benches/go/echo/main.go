// Echo server for the echo workload of BENCHMARKS.md: the Go peer of tessera-sched's echo
// example and of the tokio and may servers in benches/src/bin/echo. A goroutine per
// connection reads into a 4 KiB buffer and writes back what it read until the peer closes.
// Go's net package already sets TCP_NODELAY on every TCP connection; the Rust peers set it
// to match. Run with GOMAXPROCS=2 (the driver does).
//
//	echo-go 127.0.0.1:7000
//
// Prints "listening on ADDR" once accepting, then serves until killed.
package main

import (
	"fmt"
	"net"
	"os"
)

func serve(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: echo-go ADDR")
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// os.Stdout is unbuffered: the line reaches the driver at once.
	fmt.Printf("listening on %s\n", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			continue
		}
		go serve(c)
	}
}
