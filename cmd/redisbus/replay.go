package main

import (
	"context"
	_ "embed"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

//go:embed replay.lua
var replayLua string

var replayScript = redis.NewScript(replayLua)

// ReplayResult is what a replay did, or would do with DryRun.
type ReplayResult struct {
	DeadLetterStream string `json:"dead_letter_stream"`
	DryRun           bool   `json:"dry_run"`
	// Replayed counts the dead letters moved back (or that would be).
	Replayed int `json:"replayed"`
	// Streams counts them per stream they went to.
	Streams map[string]int `json:"streams"`
	// Missing lists the IDs asked for that were not dead letters, or were
	// replayed or purged by someone else meanwhile.
	Missing []string `json:"missing,omitempty"`
	// NoOrigin lists dead letters that do not say where they came from:
	// they need --to.
	NoOrigin []string `json:"no_origin,omitempty"`
	// Entries lists, in a dry run, the first dead letters that would be
	// replayed (at most dryRunListed).
	Entries []DeadLetter `json:"entries,omitempty"`
}

// dryRunListed bounds the dead letters a dry run lists.
const dryRunListed = 1000

// replay moves the dead letters of dead that sel selects back to the
// stream each came from (to, when set), batch entries per round trip.
// Each entry moves in one script (see replay.lua). progress is told how
// many entries were looked at. On an error, the result says what was done
// before it.
func replay(ctx context.Context, client *redis.Client, dead, to string, sel selection, dryRun bool, batch int, progress func(int)) (ReplayResult, error) {
	r := ReplayResult{DeadLetterStream: dead, DryRun: dryRun, Streams: map[string]int{}}
	end, err := lastID(ctx, client, dead)
	if err != nil {
		return r, err
	}
	if end == "" { // no dead letters
		r.Missing = sel.ids
		return r, nil
	}
	if !dryRun {
		if err := replayScript.Load(ctx, client).Err(); err != nil {
			return r, err
		}
	}
	now := time.Now()
	found := map[string]bool{}
	err = sel.each(ctx, client, dead, end, func(page []redis.XMessage, visited int) error {
		if len(sel.ids) > 0 {
			for _, e := range page {
				found[e.ID] = true
			}
		}
		for len(page) > 0 {
			n := min(batch, len(page))
			if err := r.move(ctx, client, dead, to, page[:n], dryRun, now); err != nil {
				return err
			}
			page = page[n:]
		}
		progress(visited)
		return nil
	})
	if len(sel.ids) > 0 && err == nil {
		r.Missing = append(r.Missing, notFound(sel.ids, found)...)
	}
	return r, err
}

// move replays one batch of dead letters in one round trip.
func (r *ReplayResult) move(ctx context.Context, client *redis.Client, dead, to string, entries []redis.XMessage, dryRun bool, now time.Time) error {
	pipe := client.Pipeline()
	var (
		cmds    []*redis.Cmd
		letters []DeadLetter
	)
	args := make([]any, 0, 1+len(deadLetterFields))
	for _, e := range entries {
		d := deadLetterOf(e, now)
		target := to
		if target == "" {
			target = d.OriginStream
		}
		if target == "" {
			r.NoOrigin = append(r.NoOrigin, e.ID)
			continue
		}
		if dryRun {
			r.count(target)
			if len(r.Entries) < dryRunListed {
				r.Entries = append(r.Entries, d)
			}
			continue
		}
		args = append(args[:0], e.ID)
		for _, f := range deadLetterFields {
			args = append(args, f)
		}
		cmds = append(cmds, replayScript.EvalSha(ctx, pipe, []string{dead, target}, args...))
		letters = append(letters, d)
	}
	if len(cmds) == 0 {
		return nil
	}
	_, _ = pipe.Exec(ctx) // each script's own result says what happened to its entry
	var first error
	for i, cmd := range cmds {
		err := cmd.Err()
		target := to
		if target == "" {
			target = letters[i].OriginStream
		}
		switch {
		case err == nil:
			r.count(target)
		case errors.Is(err, redis.Nil):
			r.Missing = append(r.Missing, letters[i].ID)
		case first == nil:
			first = err
		}
	}
	return first
}

func (r *ReplayResult) count(stream string) {
	r.Replayed++
	r.Streams[stream]++
}

// notFound returns the IDs that are not in found.
func notFound(ids []string, found map[string]bool) []string {
	var missing []string
	for _, id := range ids {
		if !found[id] {
			missing = append(missing, id)
		}
	}
	return missing
}
