module local.test/blackhole

go 1.24
