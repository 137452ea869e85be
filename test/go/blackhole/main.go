// Command blackhole makes a TCP address that drops SYNs, for dial-timeout tests on loopback.
// It listens with a backlog of 0 and never accepts, then fills the accept queue itself: Linux drops
// further SYNs to a listener whose accept queue is full, so dialers wait until their own timeout.
package main

import (
	"fmt"
	"net"
	"os"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: blackhole <ipv4> <port>")
		os.Exit(2)
	}
	ip := net.ParseIP(os.Args[1]).To4()
	var port int
	if _, err := fmt.Sscan(os.Args[2], &port); err != nil || ip == nil {
		fmt.Fprintln(os.Stderr, "bad address")
		os.Exit(2)
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	must(err)
	must(syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1))
	sa := &syscall.SockaddrInet4{Port: port}
	copy(sa.Addr[:], ip)
	must(syscall.Bind(fd, sa))
	must(syscall.Listen(fd, 0))
	addr := fmt.Sprintf("%s:%d", ip, port)
	var fillers []net.Conn
	for len(fillers) < 8 {
		c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
		if err != nil {
			break // the queue is full: SYNs are being dropped
		}
		fillers = append(fillers, c)
	}
	fmt.Println("ready")
	for {
		time.Sleep(time.Hour)
	}
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
