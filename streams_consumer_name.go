package redisbus

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
)

// Consumer names. Two live subscribers sharing a consumer name of one group
// on one stream share its pending list: each resumes the other's entries as
// its own, and handles them a second time. So a name is leased, per stream
// and group, to one subscriber at a time: a key in Redis (leaseKey) holds
// the subscriber's random token and expires after ConsumerLease unless the
// subscriber renews it, which it does with its entries (lua/lease.lua).
// Close gives the name up; a crashed process's name lapses.

// consumerIdentity is the consumer name a topic reads under, and its lease.
type consumerIdentity struct {
	name  string
	token string // the lease's value: random, and says who holds it
	key   string // the lease
	local string // the name in localConsumerNames
}

// localConsumerNames are the names held by live subscribers of this
// process, so that a second subscriber is refused at once, without asking
// Redis.
var localConsumerNames = struct {
	sync.Mutex
	used map[string]bool
}{used: map[string]bool{}}

func defaultConsumerName() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "redisbus"
	}
	return host
}

// maxNameSuffix bounds the search for a free default name.
const maxNameSuffix = 1000

// acquireName leases a consumer name for the topic: the configured one, or
// the first free one of the host name, host-2, host-3 ….
func (t *streamsTopic) acquireName(ctx context.Context) (*consumerIdentity, error) {
	base := t.s.config.Consumer
	if t.s.explicitName {
		return t.acquireExplicitName(ctx, base)
	}
	for i := 1; i <= maxNameSuffix; i++ {
		name := base
		if i > 1 {
			name += "-" + strconv.Itoa(i)
		}
		id, _, err := t.tryLease(ctx, name)
		if id != nil || err != nil {
			return id, err
		}
	}
	return nil, fmt.Errorf("redisbus: no free consumer name from %q to %q-%d in group %q of stream %q",
		base, base, maxNameSuffix, t.s.config.ConsumerGroup, t.name)
}

// acquireExplicitName leases a configured name. When another subscriber
// holds it, that is either a live one, which renews the lease, or one that
// stopped without Close (a crash), whose lease lapses within ConsumerLease:
// it waits to find out.
func (t *streamsTopic) acquireExplicitName(ctx context.Context, name string) (*consumerIdentity, error) {
	id, holder, err := t.tryLease(ctx, name)
	if id != nil || err != nil {
		return id, err
	}
	inUse := func(holder string) error {
		return configError("StreamsSubscriberConfig.Consumer", fmt.Sprintf(
			"%q is in use by another live subscriber of group %q on stream %q (%s)",
			name, t.s.config.ConsumerGroup, t.name, holder))
	}
	if holder == localHolder {
		return nil, inUse(holder)
	}

	lease := t.s.config.ConsumerLease
	t.logger.Info("Consumer name is leased to another subscriber; waiting to see whether its lease lapses (a process that stopped without Close)",
		watermill.LogFields{"consumer": name, "holder": holderName(holder), "lease": lease.String()})
	key := leaseKey(t.name, t.s.config.ConsumerGroup, name)
	deadline := time.Now().Add(lease + lease/2)
	poll := min(max(lease/20, 5*time.Millisecond), 250*time.Millisecond)
	last := time.Duration(-1)
	for {
		if !sleep(poll, t.closing()) {
			return nil, ErrSubscriberClosed
		}
		if err := ctx.Err(); err != nil {
			return nil, context.Cause(ctx)
		}
		id, holder, err = t.tryLease(ctx, name)
		if id != nil || err != nil {
			return id, err
		}
		if holder == localHolder {
			return nil, inUse(holder)
		}
		ttl, err := t.s.config.Client.PTTL(ctx, key).Result()
		if err != nil {
			return nil, err
		}
		// A live holder renews its lease: its time to live goes up.
		if last >= 0 && ttl > last || time.Now().After(deadline) {
			return nil, inUse(holderName(holder))
		}
		last = ttl
	}
}

// localHolder stands for a holder in this process.
const localHolder = "another StreamsSubscriber in this process"

// tryLease leases name if nobody holds it; otherwise it says who does.
func (t *streamsTopic) tryLease(ctx context.Context, name string) (*consumerIdentity, string, error) {
	group := t.s.config.ConsumerGroup
	local := t.name + "\x00" + group + "\x00" + name
	localConsumerNames.Lock()
	if localConsumerNames.used[local] {
		localConsumerNames.Unlock()
		return nil, localHolder, nil
	}
	localConsumerNames.used[local] = true
	localConsumerNames.Unlock()

	id := &consumerIdentity{name: name, token: newLeaseToken(), key: leaseKey(t.name, group, name), local: local}
	ok, err := t.s.config.Client.SetNX(ctx, id.key, id.token, t.s.config.ConsumerLease).Result()
	if isRedisError(err, "OOM") {
		// Redis is full: a consumer must start all the same, as reading
		// and acking still work.
		err = setLeaseScript.Run(ctx, t.s.config.Client, []string{id.key}, id.token, t.s.config.ConsumerLease.Milliseconds()).Err()
		ok = err == nil
		if errors.Is(err, redis.Nil) {
			ok, err = false, nil
		}
	}
	if ok && err == nil {
		return id, "", nil
	}
	releaseLocalName(local)
	if err != nil {
		return nil, "", fmt.Errorf("lease consumer name %q: %w", name, err)
	}
	holder, err := t.s.config.Client.Get(ctx, id.key).Result()
	if errors.Is(err, redis.Nil) {
		holder = "a subscriber that just stopped"
	}
	return nil, holder, nil
}

func releaseLocalName(local string) {
	localConsumerNames.Lock()
	delete(localConsumerNames.used, local)
	localConsumerNames.Unlock()
}

// newLeaseToken is random, and says where the holder runs for the errors
// of those who find the name taken.
func newLeaseToken() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s pid %d on %s", uuid.NewString(), os.Getpid(), host)
}

// holderName drops the random part of a lease token.
func holderName(token string) string {
	if _, who, ok := strings.Cut(token, " "); ok {
		return who
	}
	return token
}

// leaseLost reports whether err says that another subscriber holds the
// consumer name now, and which.
func leaseLost(err error) (string, bool) {
	var redisErr redis.Error
	if errors.As(err, &redisErr) {
		if holder, ok := strings.CutPrefix(redisErr.Error(), "LEASELOST "); ok {
			return holder, true
		}
	}
	return "", false
}

// nameLost handles another subscriber taking this topic's consumer name:
// this one's lease lapsed (Redis did not answer, or the process was paused,
// for longer than ConsumerLease) and another process leased the name. Every
// entry pending under it is that process's now: the ones held here are
// dropped, and reading stops until the topic has a name again.
func (t *streamsTopic) nameLost(id *consumerIdentity, holder string) {
	if !t.identity.CompareAndSwap(id, nil) {
		return
	}
	releaseLocalName(id.local)
	entries := t.held.unacked()
	ids := make([]string, len(entries))
	for i, e := range entries {
		ids[i] = e.id
	}
	n := t.held.lose(ids)
	t.s.stats.lost.Add(uint64(n))
	t.logger.Error("Consumer name taken over by another subscriber; entries held here are dropped, and reading waits for a name", errNameTakenOver,
		watermill.LogFields{"consumer": id.name, "holder": holderName(holder), "entries_dropped": n})
	t.inbox.poke()
}

// reacquireName leases a name again after nameLost, without waiting: the
// maintenance loop calls it until it succeeds.
func (t *streamsTopic) reacquireName() {
	var id *consumerIdentity
	var err error
	if t.s.explicitName {
		id, _, err = t.tryLease(context.Background(), t.s.config.Consumer)
	} else {
		id, err = t.acquireName(context.Background())
	}
	if err != nil || id == nil {
		return
	}
	t.identity.Store(id)
	t.resume.Store(true)
	t.logger.Info("Consumer name leased again", watermill.LogFields{"consumer": id.name})
	signal(t.inbox.space)
}

// releaseName gives up the topic's consumer name in this process; Close
// has dropped the lease in Redis.
func (t *streamsTopic) releaseName() {
	if id := t.identity.Load(); id != nil {
		releaseLocalName(id.local)
	}
}
