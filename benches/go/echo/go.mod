module tessera/benches/go/echo

go 1.19
