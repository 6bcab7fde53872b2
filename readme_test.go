package redisbus_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// readmePreamble declares what the README's Go snippets use without
// defining: each snippet runs in a block of its own inside a function
// that has these, so a snippet may redeclare any of them with :=.
const readmePreamble = `package main

import (
	"context"
	"log"
	"net/http"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/components/delay"
	"github.com/ThreeDotsLabs/watermill/components/metrics"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/localcache"
	"github.com/redisbus/watermill-redisbus/dedup"
	"github.com/redisbus/watermill-redisbus/redisbusotel"
	"github.com/redisbus/watermill-redisbus/redisbusprom"
	"github.com/redisbus/watermill-redisbus/wsroute"
)

var (
	_ = log.Printf
	_ = http.Handle
	_ = watermill.NewUUID
	_ = redisbus.NewPublisher
	_ = wsroute.NewNode
	_ = redis.NewClient
	_ = metrics.NewPrometheusMetricsBuilder
	_ = prometheus.NewRegistry
	_ = promhttp.Handler
	_ = redisbusprom.NewCollector
	_ = redisbusotel.NewPublisher
	_ = delay.For
	_ = time.Second
	_ = middleware.Retry{}
	_ = localcache.New[Product]
	_ = dedup.NewMiddleware
)

// Product and database stand for an application's data and its database
// in the localcache snippets.
type Product struct {
	Name, Category string
	Price          float64
}

type database struct{}

func (database) Product(context.Context, int) (Product, error) { return Product{}, nil }
func (database) SetPrice(context.Context, int, float64) error  { return nil }

func main() {
	var (
		ctx          = context.Background()
		logger       watermill.LoggerAdapter
		client       = redis.NewClient(&redis.Options{})
		router       *message.Router
		publisher    message.Publisher
		frames       *gochannel.GoChannel
		data         []byte
		payload      []byte
		orderJSON    []byte
		processOrder func(*message.Message) error
		sessionUser  func(*http.Request) (string, error)
		subscriber   *redisbus.StreamsSubscriber
		streamsPublisher *redisbus.StreamsPublisher
		node         *wsroute.Node
		db           database
	)
	_, _, _, _, _, _, _, _, _, _ = ctx, logger, client, router, publisher, frames, data, orderJSON, processOrder, sessionUser
	_, _, _, _, _ = subscriber, streamsPublisher, node, payload, db
`

// The Go snippets of the README and docs/ are what a newcomer copies first:
// each must compile against the current API. Unused variables are the only
// errors forgiven, since a snippet shows a value without using it.
func TestReadmeGoSnippetsCompile(t *testing.T) {
	docs, err := filepath.Glob("docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range append([]string{"README.md"}, docs...) {
		t.Run(file, func(t *testing.T) { snippetsCompile(t, file) })
	}
}

func snippetsCompile(t *testing.T, file string) {
	text, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	snippets := regexp.MustCompile("(?s)```go\n(.*?)```").FindAllStringSubmatch(string(text), -1)
	if file == "README.md" && len(snippets) < 3 {
		t.Fatalf("found %d Go snippets in README.md, expected the three quick starts at least", len(snippets))
	}
	if len(snippets) == 0 {
		return
	}
	var src strings.Builder
	src.WriteString(readmePreamble)
	for _, s := range snippets {
		fmt.Fprintf(&src, "\t{\n%s\t}\n", s[1])
	}
	src.WriteString("}\n")

	// A directory inside the module, so the snippets build with its go.mod;
	// testdata keeps it out of ./... should a run leave it behind.
	dir, err := os.MkdirTemp("testdata", "readme-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command("go", "build", "-gcflags=-e", "-o", os.DevNull, "./"+dir).CombinedOutput()
	var problems []string
	for _, line := range strings.Split(string(out), "\n") {
		if !strings.Contains(line, ".go:") || strings.Contains(line, "declared and not used") {
			continue
		}
		problems = append(problems, line)
	}
	if len(problems) > 0 {
		t.Errorf("%s's Go snippets do not compile:\n%s\n\nas compiled:\n%s", file, strings.Join(problems, "\n"), numbered(src.String()))
	}
}

func numbered(src string) string {
	lines := strings.Split(src, "\n")
	for i := range lines {
		lines[i] = fmt.Sprintf("%4d %s", i+1, lines[i])
	}
	return strings.Join(lines, "\n")
}
