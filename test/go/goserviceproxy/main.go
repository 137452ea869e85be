// Command goserviceproxy is a service-proxy double in Go whose server is built the way the real
// service-proxy (stolostron/cluster-proxy-addon, pkg/serviceproxy) builds its own: an http.Server with
// only MinVersion set, started with ListenAndServeTLS (here Listen + ServeTLS, the same set-up). Go then offers h2 and http/1.1 by ALPN, with its
// own HTTP/2 defaults (250 concurrent streams, per-stream flow control, GOAWAY on Shutdown), which is what
// the user-server's HTTP/2 watches meet in production. Behind it, as in the real one, an
// httputil.ReverseProxy with ForceAttemptHTTP2=false, routed by the four Cluster-Proxy-* headers.
//
// Every response carries X-Service-Proxy-Proto (the protocol of the request that reached it), so that
// tests see which one the hop used. SIGTERM shuts the server down gracefully.
//
// usage: goserviceproxy <ip:port> <cert> <key> <kube target URL> [<proto>://<svc>.<ns>.svc:<port>=<URL>]...
package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 5 {
		fmt.Fprintln(os.Stderr, "usage: goserviceproxy <ip:port> <cert> <key> <kube target URL> [<service key>=<URL>]...")
		os.Exit(2)
	}
	targets := map[string]*httputil.ReverseProxy{"https://kubernetes.default.svc:443": proxyTo(os.Args[4])}
	for _, kv := range os.Args[5:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			fmt.Fprintf(os.Stderr, "bad service mapping %q\n", kv)
			os.Exit(2)
		}
		targets[k] = proxyTo(v)
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proto, ns := r.Header.Get("Cluster-Proxy-Proto"), r.Header.Get("Cluster-Proxy-Namespace")
		svc, port := r.Header.Get("Cluster-Proxy-Service"), r.Header.Get("Cluster-Proxy-Port")
		if proto == "" || ns == "" || svc == "" || port == "" {
			http.Error(w, "invalid request headers", http.StatusBadRequest)
			return
		}
		p, ok := targets[fmt.Sprintf("%s://%s.%s.svc:%s", proto, svc, ns, port)]
		if !ok {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		w.Header().Set("X-Service-Proxy-Proto", r.Proto)
		p.ServeHTTP(w, r)
	})
	server := &http.Server{Addr: os.Args[1], Handler: handler, TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12}}
	done := make(chan struct{})
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = server.Shutdown(ctx)
		close(done)
	}()
	// Listen first, so that "listening" is printed once connections are accepted; ServeTLS then sets up
	// TLS and HTTP/2 exactly as ListenAndServeTLS does.
	ln, err := net.Listen("tcp", os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("listening")
	if err := server.ServeTLS(ln, os.Args[2], os.Args[3]); err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	<-done
}

// proxyTo is the real service-proxy's transport choice: HTTP/1.1 to the target, so that upgrades work.
// Unlike the real one it does not verify the target: targets here are the tests' own loopback servers.
func proxyTo(raw string) *httputil.ReverseProxy {
	u, err := url.Parse(raw)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	p := httputil.NewSingleHostReverseProxy(u)
	p.Transport = &http.Transport{ForceAttemptHTTP2: false, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	return p
}
