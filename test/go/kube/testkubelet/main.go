// Command testkubelet is the kubelet side of a test cluster: the kube-apiserver reaches it for a pod's
// logs, exec, attach and port-forward exactly as it reaches a real kubelet (HTTPS with a client
// certificate, same paths and query), and the streams are served by Kubernetes' own streaming server
// code (k8s.io/cri-streaming). Only the containers are imitated:
//   - a container's log is the file <logs>/<namespace>_<pod>_<container>.log, followed while it grows;
//   - exec runs `cat` (stdin to stdout), `echo ARGS...`, `hostname` (the pod name), `sh -c 'exit N'`;
//   - attaching joins the container's main process, which echoes stdin to stdout;
//   - every pod port forwards to one loopback HTTP server that names the cluster, pod and port.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/cri-streaming/pkg/streaming/portforward"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"
)

const (
	streamIdleTimeout     = 10 * time.Minute
	streamCreationTimeout = 30 * time.Second
)

type runtime struct {
	cluster  string
	logDir   string
	httpAddr string
	// source address of a forwarded connection -> "<namespace>/<pod>:<port>"
	forwarded sync.Map
}

func main() {
	addr := flag.String("listen", "127.0.0.1:10250", "HTTPS address the apiserver dials")
	cert := flag.String("tls-cert", "", "serving certificate")
	key := flag.String("tls-key", "", "serving key")
	clientCA := flag.String("client-ca", "", "CA of the apiserver's kubelet client certificate")
	cluster := flag.String("cluster", "", "cluster name, shown by exec/port-forward answers")
	logDir := flag.String("logs", "", "folder of container log files")
	flag.Parse()

	caPEM, err := os.ReadFile(*clientCA)
	if err != nil {
		log.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		log.Fatal("no certificate in client CA file")
	}
	pair, err := tls.LoadX509KeyPair(*cert, *key)
	if err != nil {
		log.Fatal(err)
	}

	host, _, _ := net.SplitHostPort(*addr)
	podHTTP, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		log.Fatal(err)
	}
	rt := &runtime{cluster: *cluster, logDir: *logDir, httpAddr: podHTTP.Addr().String()}
	go http.Serve(podHTTP, http.HandlerFunc(rt.servePodHTTP))

	mux := http.NewServeMux()
	mux.HandleFunc("GET /containerLogs/{ns}/{pod}/{container}", rt.serveLogs)
	mux.HandleFunc("/exec/{ns}/{pod}/{container}", rt.serveExec)
	mux.HandleFunc("/attach/{ns}/{pod}/{container}", rt.serveAttach)
	mux.HandleFunc("/portForward/{ns}/{pod}", rt.servePortForward)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })

	srv := &http.Server{
		Handler: logRequests(mux),
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{pair},
			ClientCAs:    pool,
			ClientAuth:   tls.RequireAndVerifyClientCert,
			// SPDY and WebSocket upgrades need HTTP/1.1.
			NextProtos: []string{"http/1.1"},
		},
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening %s\n", ln.Addr())
	go func() {
		if err := srv.ServeTLS(ln, "", ""); !errors.Is(err, http.ErrServerClosed) {
			log.Fatal(err)
		}
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	srv.Close()
}

func logRequests(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		log.Printf("%s %s upgrade=%q", r.Method, r.URL.RequestURI(), r.Header.Get("Upgrade"))
		h.ServeHTTP(w, r)
	})
}

func podKey(r *http.Request) string { return r.PathValue("ns") + "/" + r.PathValue("pod") }

// serveLogs writes the log file and, with follow=true, every line appended later until the client leaves.
func (rt *runtime) serveLogs(w http.ResponseWriter, r *http.Request) {
	name := fmt.Sprintf("%s_%s_%s.log", r.PathValue("ns"), r.PathValue("pod"), r.PathValue("container"))
	f, err := os.Open(filepath.Join(rt.logDir, name))
	if err != nil {
		http.Error(w, fmt.Sprintf("container %q has no log", r.PathValue("container")), http.StatusNotFound)
		return
	}
	defer f.Close()
	follow := r.URL.Query().Get("follow") == "true"
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(http.StatusOK)
	flusher := w.(http.Flusher)
	reader := bufio.NewReader(f)
	for {
		line, err := reader.ReadString('\n')
		if line != "" && strings.HasSuffix(line, "\n") {
			if _, werr := io.WriteString(w, line); werr != nil {
				return
			}
			flusher.Flush()
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return
		}
		if !follow {
			io.WriteString(w, line)
			return
		}
		// A partial line stays unread until its newline is written.
		if line != "" {
			if _, err := f.Seek(-int64(len(line)), io.SeekCurrent); err != nil {
				return
			}
			reader.Reset(f)
		}
		select {
		case <-r.Context().Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (rt *runtime) serveExec(w http.ResponseWriter, r *http.Request) {
	opts, err := remotecommand.NewOptions(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	remotecommand.ServeExec(w, r, rt, podKey(r), "", r.PathValue("container"), r.URL.Query()["command"], opts,
		streamIdleTimeout, streamCreationTimeout, remotecommand.SupportedStreamingProtocols)
}

func (rt *runtime) serveAttach(w http.ResponseWriter, r *http.Request) {
	opts, err := remotecommand.NewOptions(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	remotecommand.ServeAttach(w, r, rt, podKey(r), "", r.PathValue("container"), opts,
		streamIdleTimeout, streamCreationTimeout, remotecommand.SupportedStreamingProtocols)
}

func (rt *runtime) servePortForward(w http.ResponseWriter, r *http.Request) {
	opts, err := portforward.NewV4Options(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	portforward.ServePortForward(w, r, rt, podKey(r), "", opts, streamIdleTimeout, streamCreationTimeout, portforward.SupportedProtocols)
}

var exitCommand = regexp.MustCompile(`^exit ([0-9]+)$`)

func (rt *runtime) ExecInContainer(ctx context.Context, pod, _ string, container string, cmd []string, in io.Reader, out, errOut io.WriteCloser, _ bool, _ <-chan remotecommand.TerminalSize, _ time.Duration) error {
	log.Printf("exec in %s/%s: %q", pod, container, cmd)
	switch {
	case len(cmd) == 1 && cmd[0] == "cat":
		if in == nil || out == nil {
			return utilexec.CodeExitError{Err: errors.New("cat needs stdin and stdout"), Code: 2}
		}
		_, err := io.Copy(out, in)
		return err
	case len(cmd) >= 1 && cmd[0] == "echo":
		_, err := fmt.Fprintln(out, strings.Join(cmd[1:], " "))
		return err
	case len(cmd) == 1 && cmd[0] == "hostname":
		_, err := fmt.Fprintln(out, pod[strings.Index(pod, "/")+1:])
		return err
	case len(cmd) == 3 && cmd[0] == "sh" && cmd[1] == "-c" && exitCommand.MatchString(cmd[2]):
		code, _ := strconv.Atoi(exitCommand.FindStringSubmatch(cmd[2])[1])
		if code == 0 {
			return nil
		}
		return utilexec.CodeExitError{Err: fmt.Errorf("command exited with %d", code), Code: code}
	}
	if errOut != nil {
		fmt.Fprintf(errOut, "%s: command not found\n", cmd[0])
	}
	return utilexec.CodeExitError{Err: fmt.Errorf("%s: command not found", cmd[0]), Code: 127}
}

func (rt *runtime) AttachContainer(_ context.Context, pod, _ string, container string, in io.Reader, out, _ io.WriteCloser, _ bool, _ <-chan remotecommand.TerminalSize) error {
	log.Printf("attach to %s/%s", pod, container)
	if in == nil || out == nil {
		return nil
	}
	_, err := io.Copy(out, in)
	return err
}

func (rt *runtime) PortForward(ctx context.Context, pod, _ string, port int32, stream io.ReadWriteCloser) error {
	log.Printf("port-forward to %s:%d", pod, port)
	defer stream.Close()
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", rt.httpAddr)
	if err != nil {
		return err
	}
	defer conn.Close()
	// The HTTP server knows which pod it serves by the connection's source address.
	rt.forwarded.Store(conn.LocalAddr().String(), fmt.Sprintf("%s:%d", pod, port))
	defer rt.forwarded.Delete(conn.LocalAddr().String())
	done := make(chan struct{}, 2)
	go func() {
		io.Copy(conn, stream)
		conn.(*net.TCPConn).CloseWrite()
		done <- struct{}{}
	}()
	go func() {
		io.Copy(stream, conn)
		done <- struct{}{}
	}()
	<-done
	<-done
	return nil
}

func (rt *runtime) servePodHTTP(w http.ResponseWriter, r *http.Request) {
	target, ok := rt.forwarded.Load(r.RemoteAddr)
	if !ok {
		http.Error(w, "not a forwarded connection", http.StatusForbidden)
		return
	}
	fmt.Fprintf(w, "cluster=%s pod=%s path=%s\n", rt.cluster, target, r.URL.Path)
}
