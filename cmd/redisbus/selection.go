package main

import (
	"context"
	"errors"
	"regexp"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	redisbus "github.com/redisbus/watermill-redisbus"
)

// selection is which dead letters a command acts on: the listed IDs, or
// every entry whose reason matches and that is younger than since.
type selection struct {
	ids    []string
	all    bool
	reason *regexp.Regexp
	since  time.Duration

	reasonText string // the flag, compiled into reason by parse
}

func (s *selection) flags(cmd *cobra.Command, withAll bool) {
	if withAll {
		cmd.Flags().BoolVar(&s.all, "all", false, "every dead letter")
	}
	cmd.Flags().StringVar(&s.reasonText, "reason", "", "only dead letters whose reason matches this regular expression")
	cmd.Flags().DurationVar(&s.since, "since", 0, "only dead letters moved within this long (e.g. 1h, 30m)")
}

// parse checks the flags and takes the IDs. required means the command
// needs to be told what to act on: IDs, --all or a filter.
func (s *selection) parse(ids []string, required bool) error {
	s.ids = ids
	if err := checkIDs(ids); err != nil {
		return err
	}
	if s.reasonText != "" {
		re, err := regexp.Compile(s.reasonText)
		if err != nil {
			return usagef("--reason: %v", err)
		}
		s.reason = re
	}
	if s.since < 0 {
		return usagef("--since must not be negative")
	}
	filtered := s.reason != nil || s.since > 0
	switch {
	case len(ids) > 0 && (s.all || filtered):
		return usagef("give entry IDs or --all/--reason/--since, not both")
	case s.all && filtered:
		return usagef("--all selects every dead letter: leave it out to filter by --reason or --since")
	case required && len(ids) == 0 && !s.all && !filtered:
		return usagef("say which dead letters: entry IDs, --all, --reason REGEX or --since DURATION")
	}
	return nil
}

// errStop ends each early without an error.
var errStop = errors.New("stop")

// eachPage is how many entries one XRANGE reads.
const eachPage = 500

// each calls fn with the selected entries of stream up to end ("+" for
// all), a page at a time, oldest first, and how many entries it looked at
// for them (for a progress bar). Entries added after end are not
// visited, so a replay that dead-letters its own entries again ends.
// Listed IDs that are not in the stream are left out.
func (s *selection) each(ctx context.Context, client redis.UniversalClient, stream, end string, fn func(selected []redis.XMessage, visited int) error) error {
	err := s.visit(ctx, client, stream, end, fn)
	if errors.Is(err, errStop) {
		return nil
	}
	return err
}

func (s *selection) visit(ctx context.Context, client redis.UniversalClient, stream, end string, fn func(selected []redis.XMessage, visited int) error) error {
	if len(s.ids) > 0 {
		for i := 0; i < len(s.ids); i += eachPage {
			pipe := client.Pipeline()
			var cmds []*redis.XMessageSliceCmd
			for _, id := range s.ids[i:min(i+eachPage, len(s.ids))] {
				cmds = append(cmds, pipe.XRange(ctx, stream, id, id))
			}
			if _, err := pipe.Exec(ctx); err != nil {
				return err
			}
			var found []redis.XMessage
			for _, cmd := range cmds {
				found = append(found, cmd.Val()...)
			}
			if err := fn(found, len(cmds)); err != nil {
				return err
			}
		}
		return nil
	}
	start := "-"
	if s.since > 0 {
		start = strconv.FormatInt(time.Now().Add(-s.since).UnixMilli(), 10)
	}
	for {
		page, err := client.XRangeN(ctx, stream, start, end, eachPage).Result()
		if err != nil {
			return err
		}
		if len(page) == 0 {
			return nil
		}
		start = "(" + page[len(page)-1].ID
		selected := page[:0:0]
		for _, e := range page {
			if s.matches(e) {
				selected = append(selected, e)
			}
		}
		if err := fn(selected, len(page)); err != nil {
			return err
		}
		if len(page) < eachPage {
			return nil
		}
	}
}

func (s *selection) matches(e redis.XMessage) bool {
	if s.reason == nil {
		return true
	}
	reason, _ := e.Values[redisbus.DeadLetterFieldReason].(string)
	return s.reason.MatchString(reason)
}

// lastID is the ID of the newest entry of stream, or "" when it is empty.
func lastID(ctx context.Context, client redis.UniversalClient, stream string) (string, error) {
	newest, err := client.XRevRangeN(ctx, stream, "+", "-", 1).Result()
	if err != nil || len(newest) == 0 {
		return "", err
	}
	return newest[0].ID, nil
}
