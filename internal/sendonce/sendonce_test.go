package sendonce

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestNotExecutedOnlyWhenRedisCannotHaveRunIt(t *testing.T) {
	dial := &net.OpError{Op: "dial", Err: errors.New("connection refused")}
	read := &net.OpError{Op: "read", Err: errors.New("i/o timeout")}
	for err, want := range map[error]bool{
		nil:                             false,
		dial:                            true,
		fmt.Errorf("wrapped: %w", dial): true,
		redis.ErrPoolTimeout:            true,
		redis.ErrPoolExhausted:          true,
		redisError("LOADING Redis is loading the dataset in memory"):          true,
		redisError("READONLY You can't write against a read only replica."):   true,
		redisError("CLUSTERDOWN The cluster is down"):                         true,
		redisError("TRYAGAIN Multiple keys request during rehashing of slot"): true,
		redisError("MASTERDOWN Link with MASTER is down"):                     true,
		read:                     false, // sent, reply lost
		context.DeadlineExceeded: false,
		errors.New("EOF"):        false,
		redisError("OOM command not allowed when used memory > 'maxmemory'."): false, // refused, but final
	} {
		if got := NotExecuted(err); got != want {
			t.Errorf("NotExecuted(%v) = %v, want %v", err, got, want)
		}
	}
}

type redisError string

func (e redisError) Error() string { return string(e) }
func (redisError) RedisError()     {}

func TestRetrySendsAgainOnlyWhatDidNotRun(t *testing.T) {
	p := Policy{MaxRetries: 3, MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond}
	dial := &net.OpError{Op: "dial", Err: errors.New("connection refused")}
	sends := 0
	err := p.Retry(context.Background(), func() error { sends++; return dial })
	if sends != 4 || err != dial {
		t.Errorf("a dial error: %d sends, %v; want 4 and the error", sends, err)
	}
	sends = 0
	timeout := &net.OpError{Op: "read", Err: errors.New("i/o timeout")}
	_ = p.Retry(context.Background(), func() error { sends++; return timeout })
	if sends != 1 {
		t.Errorf("a lost reply was sent %d times", sends)
	}
	sends = 0
	_ = Policy{}.Retry(context.Background(), func() error { sends++; return dial })
	if sends != 1 {
		t.Errorf("MaxRetries 0 sent %d times", sends)
	}
}

func TestPolicyOfTheClient(t *testing.T) {
	none := redis.NewClient(&redis.Options{MaxRetries: -1})
	defer none.Close()
	if p := PolicyOf(none); p.MaxRetries != 0 {
		t.Errorf("MaxRetries -1 gives %d retries", p.MaxRetries)
	}
	defaults := redis.NewClient(&redis.Options{})
	defer defaults.Close()
	if p := PolicyOf(defaults); p.MaxRetries != 3 || p.MinBackoff <= 0 || p.MaxBackoff < p.MinBackoff {
		t.Errorf("defaults give %+v", p)
	}
}
