package main

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	redisbus "github.com/redisbus/watermill-redisbus"
)

//go:embed replay.lua
var replayLua string

var replayScript = redis.NewScript(replayLua)

// ReplayResult is what a replay did, or would do with DryRun.
type ReplayResult struct {
	DeadLetterStream string `json:"dead_letter_stream"`
	DryRun           bool   `json:"dry_run"`
	// Replayed counts the dead letters moved back: 0 in a dry run.
	Replayed int `json:"replayed"`
	// WouldReplay counts, in a dry run, the dead letters a replay would
	// move back: 0 in a real one.
	WouldReplay int `json:"would_replay"`
	// Streams counts them per stream they went (or would go) to.
	Streams map[string]int `json:"streams"`
	// Warnings say what will likely surprise: a stream replayed to that
	// no consumer group reads.
	Warnings []string `json:"warnings,omitempty"`
	// Missing lists the IDs asked for that were not dead letters, or were
	// replayed or purged by someone else meanwhile.
	Missing []string `json:"missing,omitempty"`
	// NoOrigin lists dead letters that do not say where they came from:
	// they need --to.
	NoOrigin []string `json:"no_origin,omitempty"`
	// Entries lists, in a dry run, the first dead letters that would be
	// replayed (at most dryRunListed).
	Entries []DeadLetter `json:"entries,omitempty"`
	// TwoStep lists the streams that are in another hash slot of a Redis
	// Cluster than the dead-letter stream, so that no script may write
	// both: their entries were re-added, then deleted (see moveInTwoSteps).
	TwoStep []string `json:"two_step,omitempty"`
}

// dryRunListed bounds the dead letters a dry run lists.
const dryRunListed = 1000

// replay moves the dead letters of dead that sel selects back to the
// stream each came from (to, when set), batch entries per round trip.
// Each entry moves in one script (see replay.lua). progress is told how
// many entries were looked at. On an error, the result says what was done
// before it.
func replay(ctx context.Context, client redis.UniversalClient, dead, to string, sel selection, dryRun bool, batch int, progress func(int)) (ReplayResult, error) {
	r := ReplayResult{DeadLetterStream: dead, DryRun: dryRun, Streams: map[string]int{}}
	end, err := lastID(ctx, client, dead)
	if err != nil {
		return r, err
	}
	if end == "" { // no dead letters
		r.Missing = sel.ids
		return r, nil
	}
	if err := r.checkTargets(ctx, client, dead, to, sel, end); err != nil {
		return r, err
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

// checkTargets looks at the streams the selected dead letters would go
// to before any moves: a key of another type would fail the replay
// midway (exit 4, nothing moved), and a stream that no consumer group
// reads is worth a warning.
func (r *ReplayResult) checkTargets(ctx context.Context, client redis.UniversalClient, dead, to string, sel selection, end string) error {
	targets := map[string]bool{}
	if to != "" {
		targets[to] = true
	} else {
		err := sel.each(ctx, client, dead, end, func(page []redis.XMessage, _ int) error {
			for _, e := range page {
				if origin, _ := e.Values[redisbus.DeadLetterFieldStream].(string); origin != "" {
					targets[origin] = true
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	for _, target := range slices.Sorted(maps.Keys(targets)) {
		kind, err := client.Type(ctx, target).Result()
		if err != nil {
			return err
		}
		switch kind {
		case "none":
			r.Warnings = append(r.Warnings, fmt.Sprintf("%s does not exist: the replay creates it, and no consumer group reads it", target))
		case "stream":
			groups, err := client.XInfoGroups(ctx, target).Result()
			if err != nil {
				return err
			}
			if len(groups) == 0 {
				r.Warnings = append(r.Warnings, fmt.Sprintf("%s has no consumer group: nothing will consume the replayed entries", target))
			}
		default:
			return &exitError{code: exitNotFound, err: fmt.Errorf("dead letters of %s go to %q, which is a %s, not a stream: nothing was replayed", dead, target, kind)}
		}
	}
	return nil
}

// move replays one batch of dead letters: in one round trip of scripts,
// and for the streams in another hash slot in three (moveInTwoSteps).
func (r *ReplayResult) move(ctx context.Context, client redis.UniversalClient, dead, to string, entries []redis.XMessage, dryRun bool, now time.Time) error {
	var (
		scripted, twoStep []DeadLetter
		targets           = map[string]string{} // dead letter ID → stream
	)
	for _, e := range entries {
		d := deadLetterOf(e, now)
		target := to
		if target == "" {
			target = d.OriginStream
		}
		switch {
		case target == "":
			r.NoOrigin = append(r.NoOrigin, e.ID)
		case dryRun:
			r.WouldReplay++
			r.Streams[target]++
			if len(r.Entries) < dryRunListed {
				r.Entries = append(r.Entries, d)
			}
		case slices.Contains(r.TwoStep, target):
			twoStep = append(twoStep, d)
		default:
			scripted = append(scripted, d)
		}
		targets[e.ID] = target
	}
	var first error
	if len(scripted) > 0 {
		pipe := client.Pipeline()
		cmds := make([]*redis.Cmd, len(scripted))
		args := make([]any, 0, 1+len(deadLetterFields))
		for i, d := range scripted {
			args = append(args[:0], d.ID)
			for _, f := range deadLetterFields {
				args = append(args, f)
			}
			cmds[i] = replayScript.EvalSha(ctx, pipe, []string{dead, targets[d.ID]}, args...)
		}
		_, _ = pipe.Exec(ctx) // each script's own result says what happened to its entry
		for i, cmd := range cmds {
			err := cmd.Err()
			target := targets[scripted[i].ID]
			switch {
			case err == nil:
				r.count(target)
			case errors.Is(err, redis.Nil):
				r.Missing = append(r.Missing, scripted[i].ID)
			case strings.HasPrefix(err.Error(), "CROSSSLOT"):
				if !slices.Contains(r.TwoStep, target) {
					r.TwoStep = append(r.TwoStep, target)
				}
				twoStep = append(twoStep, scripted[i])
			case first == nil:
				first = err
			}
		}
	}
	if len(twoStep) > 0 && first == nil {
		first = r.moveInTwoSteps(ctx, client, dead, twoStep, targets)
	}
	return first
}

// moveInTwoSteps replays dead letters whose stream is in another hash slot
// of a Redis Cluster than dead, where no script may write both: it re-adds
// them all (XADD), then deletes them all (XDEL). A console killed between
// the two leaves those entries in both streams, with the same message
// UUID: duplicated, never lost.
func (r *ReplayResult) moveInTwoSteps(ctx context.Context, client redis.UniversalClient, dead string, letters []DeadLetter, targets map[string]string) error {
	// The fields in their order, which XRANGE's map loses.
	pipe := client.Pipeline()
	reads := make([]*redis.Cmd, len(letters))
	for i, d := range letters {
		reads[i] = pipe.Do(ctx, "XRANGE", dead, d.ID, d.ID)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return err
	}
	pipe = client.Pipeline()
	var added []DeadLetter
	for i, read := range reads {
		fields, found := entryFields(read.Val())
		if !found {
			r.Missing = append(r.Missing, letters[i].ID)
			continue
		}
		fields = withoutDeadLetterFields(fields)
		if len(fields) == 0 {
			return fmt.Errorf("dead letter %s has no fields besides the dead-letter ones", letters[i].ID)
		}
		pipe.Do(ctx, append([]any{"XADD", targets[letters[i].ID], "*"}, fields...)...)
		added = append(added, letters[i])
	}
	if len(added) == 0 {
		return nil
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return err // what was added is a dead letter still, too
	}
	ids := make([]string, len(added))
	for i, d := range added {
		ids[i] = d.ID
		r.count(targets[d.ID])
	}
	return client.XDel(ctx, dead, ids...).Err()
}

// entryFields reads the fields of the one entry of an XRANGE reply.
func entryFields(reply any) (fields []any, found bool) {
	entries, _ := reply.([]any)
	if len(entries) != 1 {
		return nil, false
	}
	entry, _ := entries[0].([]any)
	if len(entry) != 2 {
		return nil, false
	}
	fields, _ = entry[1].([]any)
	return fields, true
}

// withoutDeadLetterFields drops the dead-letter fields from the end of
// fields, each once, as replay.lua does.
func withoutDeadLetterFields(fields []any) []any {
	appended := map[any]bool{}
	for _, f := range deadLetterFields {
		appended[f] = true
	}
	n := len(fields)
	for n >= 2 && appended[fields[n-2]] {
		delete(appended, fields[n-2])
		n -= 2
	}
	return fields[:n]
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
