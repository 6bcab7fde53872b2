// Package redisbusprom exports redisbus' own metrics to Prometheus: what
// only redisbus knows, beside what Watermill's components/metrics measures
// for every Pub/Sub.
//
// A [Collector] reports two kinds of series:
//
//   - counters of the components added to it (Pub/Sub and Streams
//     publishers and subscribers, wsroute nodes), read from their Stats
//     at each scrape: atomic loads, never in the way of messages;
//   - views of the streams in Redis (length, each consumer group's lag,
//     pending entries and the age of the oldest, entries per consumer,
//     dead-letter length), read in two pipelined round trips per refresh
//     whatever the number of streams, and cached for Config.CacheFor, so
//     that several Prometheus servers scraping often cost Redis little.
//
// The package is separate so that the redisbus package does not depend on
// Prometheus' client.
package redisbusprom

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/wsroute"
)

// Config configures a Collector. The zero value of every field means its
// default.
type Config struct {
	// Client reads the streams' views from Redis at scrape time. Nil means
	// no stream views: only the components' counters.
	Client redis.UniversalClient

	// Streams lists streams to watch besides the topics of the
	// StreamsSubscribers added (a process that only publishes, say).
	Streams []string

	// DeadLetterTopic names the dead-letter stream of a listed stream. Nil
	// means topic + ":dead", redisbus' default. The topics of an added
	// StreamsSubscriber use its own setting.
	DeadLetterTopic func(topic string) string

	// CacheFor is how long the stream views read from Redis are reused
	// before a scrape reads them again. Zero means 10 s; negative, every
	// scrape reads them.
	CacheFor time.Duration

	// ScrapeTimeout bounds the reads of one refresh. Zero means 5 s. A
	// refresh that fails or times out reports no stream views for that
	// scrape and counts redisbus_scrape_errors_total.
	ScrapeTimeout time.Duration

	// MaxStreams bounds the streams watched (and so the series and the
	// work per refresh). Zero means 1,000; streams beyond it are left out
	// and logged once.
	MaxStreams int

	// Logger logs failed refreshes. Nil means no logging.
	Logger watermill.LoggerAdapter
}

func (c *Config) setDefaults() {
	if c.DeadLetterTopic == nil {
		c.DeadLetterTopic = func(topic string) string { return topic + ":dead" }
	}
	if c.CacheFor == 0 {
		c.CacheFor = 10 * time.Second
	}
	if c.ScrapeTimeout == 0 {
		c.ScrapeTimeout = 5 * time.Second
	}
	if c.MaxStreams == 0 {
		c.MaxStreams = 1000
	}
	if c.Logger == nil {
		c.Logger = watermill.NopLogger{}
	}
}

// Validate reports the first invalid field.
func (c *Config) Validate() error {
	switch {
	case c.ScrapeTimeout < 0:
		return &redisbus.ConfigError{Field: "redisbusprom.Config.ScrapeTimeout", Problem: "must not be negative"}
	case c.MaxStreams < 0:
		return &redisbus.ConfigError{Field: "redisbusprom.Config.MaxStreams", Problem: "must not be negative"}
	}
	return nil
}

// Collector is a prometheus.Collector for redisbus components and streams.
// Register it once (prometheus.MustRegister) and add components to it as
// you make them; it is safe for concurrent use.
type Collector struct {
	config Config

	mu                 sync.Mutex
	names              map[string]bool
	added              map[any]string // component → its name: each is added once
	publishers         map[string]*redisbus.Publisher
	subscribers        map[string]*redisbus.Subscriber
	streamsPublishers  map[string]*redisbus.StreamsPublisher
	streamsSubscribers map[string]*redisbus.StreamsSubscriber
	nodes              map[string]*wsroute.Node

	views *streamViews
}

// NewCollector returns a Collector with no components.
func NewCollector(config Config) (*Collector, error) {
	config.setDefaults()
	if err := config.Validate(); err != nil {
		return nil, err
	}
	c := &Collector{
		config:             config,
		names:              map[string]bool{},
		added:              map[any]string{},
		publishers:         map[string]*redisbus.Publisher{},
		subscribers:        map[string]*redisbus.Subscriber{},
		streamsPublishers:  map[string]*redisbus.StreamsPublisher{},
		streamsSubscribers: map[string]*redisbus.StreamsSubscriber{},
		nodes:              map[string]*wsroute.Node{},
	}
	c.views = newStreamViews(&c.config, c.watchedStreams)
	return c, nil
}

// ErrNameTaken is returned when a component is added under a name another
// added component has: their series would be indistinguishable.
var ErrNameTaken = errors.New("redisbusprom: name taken")

// ErrAlreadyAdded is returned when a component is added a second time:
// its counters would be counted twice.
var ErrAlreadyAdded = errors.New("redisbusprom: component already added")

// add registers component under name (fallback() when empty) in m.
func add[T comparable](c *Collector, m map[string]T, name string, component T, fallback func() string) error {
	var zero T
	if component == zero {
		return errors.New("redisbusprom: nil component")
	}
	if name == "" {
		name = fallback()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if other, ok := c.added[component]; ok {
		return fmt.Errorf("%w (as %q)", ErrAlreadyAdded, other)
	}
	if c.names[name] {
		return fmt.Errorf("%w: %q (give each component a name of its own)", ErrNameTaken, name)
	}
	c.names[name] = true
	c.added[component] = name
	m[name] = component
	return nil
}

// AddPublisher reports p's counters under the label name="name" (p's
// String when name is empty). Each name, and each component, may be
// added once.
func (c *Collector) AddPublisher(name string, p *redisbus.Publisher) error {
	return add(c, c.publishers, name, p, func() string { return p.String() })
}

// AddSubscriber reports s's counters, as AddPublisher.
func (c *Collector) AddSubscriber(name string, s *redisbus.Subscriber) error {
	return add(c, c.subscribers, name, s, func() string { return s.String() })
}

// AddStreamsPublisher reports p's counters, as AddPublisher.
func (c *Collector) AddStreamsPublisher(name string, p *redisbus.StreamsPublisher) error {
	return add(c, c.streamsPublishers, name, p, func() string { return p.String() })
}

// AddStreamsSubscriber reports s's counters, as AddPublisher, and watches
// the streams it reads (with Config.Client).
func (c *Collector) AddStreamsSubscriber(name string, s *redisbus.StreamsSubscriber) error {
	return add(c, c.streamsSubscribers, name, s, func() string { return s.String() })
}

// AddNode reports a wsroute node's counters, as AddPublisher (the node's ID
// when name is empty).
func (c *Collector) AddNode(name string, n *wsroute.Node) error {
	return add(c, c.nodes, name, n, func() string { return n.ID() })
}

// Remove stops reporting the component added under name (closed
// components keep reporting their last counters until removed).
func (c *Collector) Remove(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for component, n := range c.added {
		if n == name {
			delete(c.added, component)
		}
	}
	delete(c.names, name)
	delete(c.publishers, name)
	delete(c.subscribers, name)
	delete(c.streamsPublishers, name)
	delete(c.streamsSubscribers, name)
	delete(c.nodes, name)
}

// watchedStreams returns the streams to read, each with its dead-letter
// stream: those of the StreamsSubscribers, then Config.Streams.
func (c *Collector) watchedStreams() []watchedStream {
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := map[string]bool{}
	var streams []watchedStream
	for _, s := range c.streamsSubscribers {
		for _, topic := range s.Topics() {
			if !seen[topic] {
				seen[topic] = true
				streams = append(streams, watchedStream{name: topic, deadLetter: s.DeadLetterTopic(topic)})
			}
		}
	}
	for _, topic := range c.config.Streams {
		if !seen[topic] {
			seen[topic] = true
			streams = append(streams, watchedStream{name: topic, deadLetter: c.config.DeadLetterTopic(topic)})
		}
	}
	return streams
}

// Describe sends the descriptions of every series the collector exports.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs() {
		ch <- d
	}
}

// Collect sends the current values: the components' counters, then the
// stream views (from the cache, or refreshed when older than CacheFor).
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	for name, p := range c.publishers {
		collectPublisher(ch, name, p.Stats())
	}
	for name, s := range c.subscribers {
		collectSubscriber(ch, name, s.Stats())
	}
	for name, p := range c.streamsPublishers {
		collectStreamsPublisher(ch, name, p.Stats())
	}
	for name, s := range c.streamsSubscribers {
		collectStreamsSubscriber(ch, name, s.Stats())
	}
	for name, n := range c.nodes {
		collectNode(ch, name, n.Stats())
	}
	c.mu.Unlock()
	c.views.collect(ch)
}
