package redisurl

import (
	"strings"
	"testing"
)

func TestParseNeverPrintsCredentials(t *testing.T) {
	for _, raw := range []string{
		"redis://:s3cr3t-pw@127.0.0.1:notaport/0",
		"redis://alice:s3cr3t-pw@127.0.0.1:6379/notadb",
		"http://alice:s3cr3t-pw@127.0.0.1:6379",
		"redis://alice:s3cr3t-pw@[::1:6379",
		"rediss://alice:s3cr3t-pw@host:6379/0?dial_timeout=forever",
		"redis://alice:s3cr3t-pw@host%zz:6379",
		"redis://127.0.0.1:6379/0?password=s3cr3t-pw&foo=1",
		"redis://127.0.0.1:6379/0?user=alice&Password=s3cr3t-pw",
	} {
		_, err := Parse(raw)
		if err == nil {
			t.Errorf("%s: parsed", Redact(raw))
			continue
		}
		if strings.Contains(err.Error(), "s3cr3t-pw") || strings.Contains(err.Error(), "alice") {
			t.Errorf("error shows the credentials: %v", err)
		}
		if !strings.Contains(err.Error(), "REDIS_URL") {
			t.Errorf("error does not say which setting: %v", err)
		}
	}
}

func TestParseAcceptsWhatGoRedisAccepts(t *testing.T) {
	opt, err := Parse("redis://alice:pw@127.0.0.1:6380/2")
	if err != nil {
		t.Fatal(err)
	}
	if opt.Addr != "127.0.0.1:6380" || opt.Username != "alice" || opt.Password != "pw" || opt.DB != 2 {
		t.Errorf("parsed %+v", opt)
	}
}

func TestRedact(t *testing.T) {
	if got := Redact("redis://alice:pw@host:6379/0"); got != "redis://xxxxx@host:6379/0" {
		t.Errorf("got %s", got)
	}
	if got := Redact("redis://host:6379/0?password=pw&db=1"); got != "redis://host:6379/0?password=xxxxx&db=1" {
		t.Errorf("got %s", got)
	}
	if got := Redact("redis://host:6379/0"); got != "redis://host:6379/0" {
		t.Errorf("got %s", got)
	}
}
