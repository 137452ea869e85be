// Command clientgo is a client-go program configured as the product documents it:
//
//	rest.Config{Host: "https://<user-server>/<clusterName>", TLSClientConfig: {CAFile}, BearerToken}
//
// It lists the pods of a namespace, watches them until one is modified, then follows a pod's log
// until a given number of lines arrived. Each step prints one JSON line on stdout for the test.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

func emit(v map[string]any) {
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
}

func fail(step string, err error) {
	emit(map[string]any{"step": step, "error": err.Error()})
	os.Exit(1)
}

func main() {
	host := flag.String("host", "", "https://<user-server>/<clusterName>")
	caFile := flag.String("ca", "", "CA file of the user-server")
	token := flag.String("token", "", "bearer token")
	namespace := flag.String("namespace", "default", "namespace")
	logPod := flag.String("log-pod", "", "pod whose log to follow")
	logLines := flag.Int("log-lines", 1, "lines to read from the log")
	timeout := flag.Duration("timeout", 60*time.Second, "overall deadline")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	cfg := &rest.Config{
		Host:            *host,
		TLSClientConfig: rest.TLSClientConfig{CAFile: *caFile},
		BearerToken:     *token,
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		fail("config", err)
	}

	version, err := client.Discovery().ServerVersion()
	if err != nil {
		fail("version", err)
	}
	emit(map[string]any{"step": "version", "gitVersion": version.GitVersion})

	pods, err := client.CoreV1().Pods(*namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		fail("list", err)
	}
	names := []string{}
	for _, p := range pods.Items {
		names = append(names, p.Name)
	}
	emit(map[string]any{"step": "list", "pods": names, "resourceVersion": pods.ResourceVersion})

	w, err := client.CoreV1().Pods(*namespace).Watch(ctx, metav1.ListOptions{ResourceVersion: pods.ResourceVersion})
	if err != nil {
		fail("watch", err)
	}
	emit(map[string]any{"step": "watching"})
	for ev := range w.ResultChan() {
		if ev.Type == watch.Error {
			fail("watch", fmt.Errorf("%v", ev.Object))
		}
		pod := ev.Object.(*corev1.Pod)
		emit(map[string]any{"step": "watch", "type": string(ev.Type), "pod": pod.Name, "labels": pod.Labels})
		if ev.Type == watch.Modified {
			break
		}
	}
	w.Stop()
	if ctx.Err() != nil {
		fail("watch", ctx.Err())
	}

	stream, err := client.CoreV1().Pods(*namespace).GetLogs(*logPod, &corev1.PodLogOptions{Follow: true}).Stream(ctx)
	if err != nil {
		fail("logs", err)
	}
	defer stream.Close()
	emit(map[string]any{"step": "following"})
	scanner := bufio.NewScanner(stream)
	for i := 0; i < *logLines && scanner.Scan(); i++ {
		emit(map[string]any{"step": "log", "line": scanner.Text()})
	}
	if err := scanner.Err(); err != nil {
		fail("logs", err)
	}
	emit(map[string]any{"step": "done"})
}
