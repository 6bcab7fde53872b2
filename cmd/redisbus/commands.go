package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// deadFlag adds --dead-stream: subscribers may name their dead-letter
// streams otherwise (StreamsSubscriberConfig.DeadLetterTopic).
func deadFlag(cmd *cobra.Command, dead *string) {
	cmd.Flags().StringVar(dead, "dead-stream", "", "the topic's dead-letter stream (default TOPIC:dead)")
}

func deadStream(topic, dead string) string {
	if dead != "" {
		return dead
	}
	return topic + ":dead"
}

func newStreamsCommand(c *console) *cobra.Command {
	var (
		match, suffix string
		limit         int
	)
	cmd := &cobra.Command{
		Use:   "streams",
		Short: "List streams with length, groups, lag, pending entries and dead letters",
		Args:  cobra.NoArgs,
	}
	cmd.Flags().StringVar(&match, "match", "*", "only streams whose names match this SCAN pattern")
	cmd.Flags().StringVar(&suffix, "dead-suffix", ":dead", "streams named TOPIC+this are TOPIC's dead letters")
	cmd.Flags().IntVar(&limit, "limit", 1000, "list at most this many topics (an arbitrary subset, in SCAN order, when there are more)")
	validate := func([]string) error { return atLeastOne("--limit", int64(limit)) }
	cmd.RunE = c.command(validate, func(ctx context.Context, _ []string) error {
		topics, truncated, err := StreamsView(ctx, c.client, match, suffix, limit)
		if err != nil {
			return err
		}
		if truncated {
			c.notef("(more than %d topics: narrow with --match or raise --limit)", limit)
		}
		header := []string{"STREAM", "LENGTH", "GROUPS", "LAG", "PENDING", "OLDEST PENDING", "DEAD"}
		return list(c, topics, fmt.Sprintf("no streams match %q", match), header, func(s StreamSummary) []string {
			if !s.Exists {
				return []string{s.Stream, "-", "-", "-", "-", "-", itoa(s.DeadLetters)}
			}
			return []string{s.Stream, itoa(s.Length), itoa(len(s.Groups)), lagText(s.Lag), itoa(s.Pending),
				oldestPendingText(s.Pending, s.OldestPendingAgeMS), itoa(s.DeadLetters)}
		})
	})
	return cmd
}

// list prints items as JSON with --json, else as a table of a row per
// item, or says empty on stderr when there are none.
func list[T any](c *console, items []T, empty string, header []string, row func(T) []string) error {
	if c.json {
		return c.printJSON(items)
	}
	if len(items) == 0 {
		c.notef("%s", empty)
		return nil
	}
	rows := make([][]string, len(items))
	for i, item := range items {
		rows[i] = row(item)
	}
	table(c.stdout, header, rows)
	return nil
}

func newStreamCommand(c *console) *cobra.Command {
	var (
		dead string
		last int64
	)
	cmd := &cobra.Command{
		Use:   "stream TOPIC",
		Short: "Show a stream's groups, consumers and last entries",
		Args:  cobra.ExactArgs(1),
	}
	deadFlag(cmd, &dead)
	cmd.Flags().Int64Var(&last, "last", 5, "show this many of the newest entries")
	validate := func([]string) error { return atLeastOne("--last", last) }
	cmd.RunE = c.command(validate, func(ctx context.Context, args []string) error {
		topic := args[0]
		if err := c.requireStream(ctx, topic, noStream(topic)); err != nil {
			return err
		}
		d, err := StreamView(ctx, c.client, topic, deadStream(topic, dead), last)
		if err != nil {
			return err
		}
		if c.json {
			return c.printJSON(d)
		}
		w := c.stdout
		fmt.Fprintf(w, "Stream %s: %d entries (%s … %s), %d dead letters in %s\n\n",
			d.Stream, d.Length, dash(d.FirstID), dash(d.LastID), d.DeadLetters, d.DeadLetterStream)
		groups := make([][]string, len(d.Groups))
		for i, g := range d.Groups {
			groups[i] = []string{g.Name, itoa(g.Consumers), itoa(g.Pending), oldestPendingText(g.Pending, g.OldestPendingAgeMS), lagText(g.Lag), g.LastDeliveredID}
		}
		table(w, []string{"GROUP", "CONSUMERS", "PENDING", "OLDEST PENDING", "LAG", "LAST DELIVERED"}, groups)
		fmt.Fprintln(w)
		consumers := make([][]string, len(d.Consumers))
		for i, cs := range d.Consumers {
			consumers[i] = []string{cs.Group, cs.Name, itoa(cs.Pending), age(cs.IdleMS)}
		}
		table(w, []string{"GROUP", "CONSUMER", "PENDING", "IDLE"}, consumers)
		fmt.Fprintln(w)
		entries := make([][]string, len(d.LastEntries))
		for i, e := range d.LastEntries {
			entries[i] = []string{e.ID, age(e.AgeMS), dash(e.UUID), dash(metadataText(e.Metadata)), payloadText(e.Message, 60)}
		}
		table(w, []string{"ID", "AGE", "UUID", "METADATA", "PAYLOAD"}, entries)
		return nil
	})
	return cmd
}

func newDeadCommand(c *console) *cobra.Command {
	var (
		dead  string
		limit int
		sel   selection
	)
	cmd := &cobra.Command{
		Use:   "dead TOPIC [ID...]",
		Short: "List a topic's dead letters with reason, origin, deliveries and age",
		Args:  cobra.MinimumNArgs(1),
	}
	deadFlag(cmd, &dead)
	sel.flags(cmd, false)
	cmd.Flags().IntVar(&limit, "limit", 100, "list at most this many, oldest first")
	validate := func(args []string) error {
		if err := atLeastOne("--limit", int64(limit)); err != nil {
			return err
		}
		return sel.parse(args[1:], false)
	}
	cmd.RunE = c.command(validate, func(ctx context.Context, args []string) error {
		stream := deadStream(args[0], dead)
		if err := c.requireDeadLetters(ctx, args[0], stream); err != nil {
			return err
		}
		letters, more, err := DeadView(ctx, c.client, stream, sel, limit)
		if err != nil {
			return err
		}
		if more {
			c.notef("(showing the oldest %d: raise --limit, or filter with --reason or --since)", limit)
		}
		header := []string{"ID", "AGE", "REASON", "ORIGIN", "GROUP", "DELIVERIES", "UUID", "PAYLOAD"}
		return list(c, letters, "no dead letters in "+stream, header, func(d DeadLetter) []string {
			return []string{d.ID, age(d.AgeMS), truncate(d.Reason, 50), dash(d.OriginStream) + " " + dash(d.OriginID),
				dash(d.Group), itoa(d.Deliveries), dash(d.Message.UUID), payloadText(d.Message, 40)}
		})
	})
	return cmd
}

func newReplayCommand(c *console) *cobra.Command {
	var (
		dead, to   string
		dryRun     bool
		noProgress bool
		batch      int
		sel        selection
	)
	cmd := &cobra.Command{
		Use:   "replay TOPIC [ID...]",
		Short: "Re-publish dead letters to the stream they came from (or --to)",
		Long: `Re-publish dead letters to the stream they came from (or --to).

Each dead letter is re-added with its own fields (without the redisbus_*
fields the subscriber added when it gave up) and deleted from the
dead-letter stream in one Lua script: whenever the console stops, even
killed, each entry is in exactly one of the two streams. The re-added
entry gets a new ID and keeps its message UUID. Every consumer group of
the stream gets it again, not only the one that dead-lettered it.

Say which: entry IDs, --all, --reason REGEX and/or --since DURATION.`,
		Args: cobra.MinimumNArgs(1),
	}
	deadFlag(cmd, &dead)
	sel.flags(cmd, true)
	cmd.Flags().StringVar(&to, "to", "", "re-publish to this stream instead of each entry's origin")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "show what would be replayed, change nothing")
	cmd.Flags().BoolVar(&noProgress, "no-progress", false, "no progress bar (there is none unless stderr is a terminal)")
	cmd.Flags().IntVar(&batch, "batch", 100, "entries moved per round trip to Redis")
	validate := func(args []string) error {
		if batch < 1 {
			return usagef("--batch must be at least 1")
		}
		return sel.parse(args[1:], true)
	}
	cmd.RunE = c.command(validate, func(ctx context.Context, args []string) error {
		stream := deadStream(args[0], dead)
		if err := c.requireDeadLetters(ctx, args[0], stream); err != nil {
			return err
		}
		if to != "" {
			if err := c.requireStream(ctx, to, nil); err != nil {
				return err
			}
		}
		bar := c.progressBar(ctx, stream, len(sel.ids), noProgress || dryRun)
		r, err := replay(ctx, c.client, stream, to, sel, dryRun, batch, func(n int) { _ = bar.Add(n) })
		_ = bar.Finish()
		if perr := c.printReplay(r); perr != nil && err == nil {
			err = perr
		}
		if err != nil {
			return err
		}
		if len(r.NoOrigin) > 0 {
			return failf(exitFailure, "%d dead letters do not say which stream they came from: replay them with --to STREAM", len(r.NoOrigin))
		}
		return missingError(r.Missing, stream)
	})
	return cmd
}

// progressBar shows how far a long replay got, on stderr when it is a
// terminal; otherwise (or hidden) it writes nothing.
func (c *console) progressBar(ctx context.Context, dead string, ids int, hidden bool) *progressbar.ProgressBar {
	f, isFile := c.stderr.(*os.File)
	if hidden || c.json || !isFile || !term.IsTerminal(int(f.Fd())) {
		return progressbar.DefaultSilent(-1)
	}
	total := int64(ids)
	if total == 0 {
		total, _ = c.client.XLen(ctx, dead).Result()
	}
	return progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(c.stderr),
		progressbar.OptionSetDescription("replaying "+dead),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("entries"),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)
}

func (c *console) printReplay(r ReplayResult) error {
	for _, w := range r.Warnings {
		c.notef("redisbus: warning: %s", w)
	}
	if c.json {
		return c.printJSON(r)
	}
	if r.DryRun {
		rows := make([][]string, len(r.Entries))
		for i, d := range r.Entries {
			rows[i] = []string{d.ID, truncate(d.Reason, 50), dash(d.OriginStream), dash(d.Message.UUID), payloadText(d.Message, 40)}
		}
		if len(rows) > 0 {
			table(c.stdout, []string{"ID", "REASON", "ORIGIN", "UUID", "PAYLOAD"}, rows)
		}
		if r.WouldReplay > len(r.Entries) {
			fmt.Fprintf(c.stdout, "… and %d more\n", r.WouldReplay-len(r.Entries))
		}
		fmt.Fprintf(c.stdout, "Dry run: would replay %d dead letters from %s%s. Nothing changed.\n", r.WouldReplay, r.DeadLetterStream, streamsText(r.Streams))
	} else {
		fmt.Fprintf(c.stdout, "Replayed %d dead letters from %s%s.\n", r.Replayed, r.DeadLetterStream, streamsText(r.Streams))
	}
	for _, stream := range r.TwoStep {
		fmt.Fprintf(c.stdout, "Note: %s is in another hash slot than %s (Redis Cluster), so each entry was re-added, then deleted: "+
			"had the replay been killed between the two, the entry would be in both (with its UUID). "+
			"Name topics with a hash tag, such as {orders}, to keep a topic and its dead letters in one slot.\n", stream, r.DeadLetterStream)
	}
	for _, id := range r.NoOrigin {
		fmt.Fprintf(c.stdout, "Not replayed (no %s field): %s\n", "redisbus_origin_stream", id)
	}
	for _, id := range r.Missing {
		fmt.Fprintf(c.stdout, "Not a dead letter (any more): %s\n", id)
	}
	return nil
}

func streamsText(streams map[string]int) string {
	if len(streams) == 0 {
		return ""
	}
	parts := make([]string, 0, len(streams))
	for _, s := range slices.Sorted(maps.Keys(streams)) {
		parts = append(parts, fmt.Sprintf("%s (%d)", s, streams[s]))
	}
	return " to " + strings.Join(parts, ", ")
}

func newPurgeCommand(c *console) *cobra.Command {
	var (
		dead string
		yes  bool
		sel  selection
	)
	cmd := &cobra.Command{
		Use:   "purge TOPIC [ID...]",
		Short: "Delete dead letters (asks first unless --yes)",
		Long: `Delete dead letters: entry IDs, --all, --reason REGEX and/or --since DURATION.

It counts them, asks for confirmation on stdin unless --yes, then deletes
exactly the entries it counted (dead letters added meanwhile stay).`,
		Args: cobra.MinimumNArgs(1),
	}
	deadFlag(cmd, &dead)
	sel.flags(cmd, true)
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	validate := func(args []string) error { return sel.parse(args[1:], true) }
	cmd.RunE = c.command(validate, func(ctx context.Context, args []string) error {
		stream := deadStream(args[0], dead)
		if err := c.requireDeadLetters(ctx, args[0], stream); err != nil {
			return err
		}
		var ids []string
		found := map[string]bool{}
		err := sel.each(ctx, c.client, stream, "+", func(page []redis.XMessage, _ int) error {
			for _, e := range page {
				ids = append(ids, e.ID)
				found[e.ID] = true
			}
			return nil
		})
		if err != nil {
			return err
		}
		missing := notFound(sel.ids, found)
		if len(ids) == 0 {
			c.notef("no dead letters in %s match", stream)
			if err := c.printPurge(stream, 0, missing); err != nil {
				return err
			}
			return missingError(missing, stream)
		}
		if !yes && !c.confirm(fmt.Sprintf("Delete %d dead letters from %s? [y/N] ", len(ids), stream)) {
			return failf(exitFailure, "not confirmed: nothing deleted (use --yes in scripts)")
		}
		deleted := 0
		for i := 0; i < len(ids); i += eachPage {
			n, err := c.client.XDel(ctx, stream, ids[i:min(i+eachPage, len(ids))]...).Result()
			deleted += int(n)
			if err != nil {
				_ = c.printPurge(stream, deleted, missing)
				return err
			}
		}
		if err := c.printPurge(stream, deleted, missing); err != nil {
			return err
		}
		return missingError(missing, stream)
	})
	return cmd
}

// missingError is the failure (exit 1) of a command given IDs that are
// not dead letters in stream, nil when there are none.
func missingError(missing []string, stream string) error {
	if len(missing) == 0 {
		return nil
	}
	return failf(exitFailure, "%d of the IDs given are not dead letters in %s (replayed or purged already?)", len(missing), stream)
}

func (c *console) printPurge(stream string, deleted int, missing []string) error {
	if c.json {
		return c.printJSON(map[string]any{"dead_letter_stream": stream, "deleted": deleted, "missing": nonNil(missing)})
	}
	fmt.Fprintf(c.stdout, "Deleted %d dead letters from %s.\n", deleted, stream)
	for _, id := range missing {
		fmt.Fprintf(c.stdout, "Not a dead letter (any more): %s\n", id)
	}
	return nil
}

// nonNil is ids, or an empty list for JSON's [] instead of null.
func nonNil(ids []string) []string {
	if ids == nil {
		return []string{}
	}
	return ids
}

// confirm asks question on stderr and reads the answer from stdin.
func (c *console) confirm(question string) bool {
	fmt.Fprint(c.stderr, question)
	answer, err := bufio.NewReader(c.stdin).ReadString('\n')
	if f, ok := c.stdin.(*os.File); !ok || !term.IsTerminal(int(f.Fd())) {
		fmt.Fprintln(c.stderr) // a person's Enter ends the line; piped input does not show
	}
	if err != nil && err != io.EOF {
		return false
	}
	answer = strings.ToLower(strings.TrimSpace(answer))
	return answer == "y" || answer == "yes"
}

func newPendingCommand(c *console) *cobra.Command {
	var (
		consumer string
		minIdle  time.Duration
		limit    int64
	)
	cmd := &cobra.Command{
		Use:   "pending TOPIC GROUP",
		Short: "List entries delivered to a group's consumers and not acked",
		Args:  cobra.ExactArgs(2),
	}
	cmd.Flags().StringVar(&consumer, "consumer", "", "only this consumer's entries")
	cmd.Flags().DurationVar(&minIdle, "min-idle", 0, "only entries idle this long or longer (e.g. 5m)")
	cmd.Flags().Int64Var(&limit, "limit", 100, "list at most this many, oldest first")
	validate := func([]string) error { return atLeastOne("--limit", limit) }
	cmd.RunE = c.command(validate, func(ctx context.Context, args []string) error {
		topic, group := args[0], args[1]
		if err := c.requireStream(ctx, topic, noStream(topic)); err != nil {
			return err
		}
		entries, err := PendingView(ctx, c.client, topic, group, consumer, minIdle, limit)
		if err != nil {
			return c.groupError(err, topic, group)
		}
		empty := fmt.Sprintf("nothing pending in group %s of %s", group, topic)
		return list(c, entries, empty, []string{"ID", "CONSUMER", "IDLE", "DELIVERIES", "AGE"}, func(p PendingEntry) []string {
			return []string{p.ID, p.Consumer, age(p.IdleMS), itoa(p.Deliveries), age(p.AgeMS)}
		})
	})
	return cmd
}

func newClaimCommand(c *console) *cobra.Command {
	var (
		to, from string
		minIdle  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "claim TOPIC GROUP --to CONSUMER [ID...] [--min-idle DURATION] [--from CONSUMER]",
		Short: "Give pending entries to another consumer of the group",
		Long: `Give pending entries to another consumer of the group (XCLAIM): the
listed IDs, or without IDs every entry idle for --min-idle or longer
(XAUTOCLAIM), only --from's when given. With IDs, --min-idle skips those
that became active again. Delivery counts stay as they were.`,
		Args: cobra.MinimumNArgs(2),
	}
	cmd.Flags().StringVar(&to, "to", "", "the consumer to give them to (required)")
	cmd.Flags().StringVar(&from, "from", "", "only this consumer's entries")
	cmd.Flags().DurationVar(&minIdle, "min-idle", 0, "only entries idle this long or longer")
	validate := func(args []string) error {
		switch {
		case to == "":
			return usagef("say which consumer gets the entries: --to CONSUMER")
		case len(args) == 2 && minIdle <= 0:
			return usagef("say which entries: IDs, or --min-idle DURATION for all that are idle that long")
		case len(args) > 2 && from != "":
			return usagef("--from goes with --min-idle, not with IDs")
		}
		return checkIDs(args[2:])
	}
	cmd.RunE = c.command(validate, func(ctx context.Context, args []string) error {
		topic, group := args[0], args[1]
		if err := c.requireStream(ctx, topic, noStream(topic)); err != nil {
			return err
		}
		claimed, err := claim(ctx, c.client, topic, group, from, to, args[2:], minIdle)
		if err != nil {
			return c.groupError(err, topic, group)
		}
		given := map[string]bool{}
		for _, id := range claimed {
			given[id] = true
		}
		notClaimed := notFound(args[2:], given)
		if c.json {
			if err := c.printJSON(map[string]any{"consumer": to, "claimed": claimed, "not_claimed": nonNil(notClaimed)}); err != nil {
				return err
			}
		} else {
			fmt.Fprintf(c.stdout, "Claimed %d entries for consumer %s.\n", len(claimed), to)
			for _, id := range claimed {
				fmt.Fprintln(c.stdout, id)
			}
			for _, id := range notClaimed {
				fmt.Fprintf(c.stdout, "Not claimed: %s\n", id)
			}
		}
		if len(notClaimed) > 0 {
			return failf(exitFailure, "%d of the IDs given were not claimed: not pending in group %s (or, with --min-idle, not idle that long)", len(notClaimed), group)
		}
		return nil
	})
	return cmd
}

// claimPage is how many entries one XAUTOCLAIM or XPENDING takes.
const claimPage = 100

// claim gives ids of group to consumer or, without ids, every entry idle
// for minIdle (of from, when set). Delivery counts stay (JUSTID). It
// returns the IDs claimed.
func claim(ctx context.Context, client redis.UniversalClient, stream, group, from, to string, ids []string, minIdle time.Duration) ([]string, error) {
	justID := func(ids []string) ([]string, error) {
		return client.XClaimJustID(ctx, &redis.XClaimArgs{
			Stream: stream, Group: group, Consumer: to, MinIdle: minIdle, Messages: ids,
		}).Result()
	}
	if len(ids) > 0 {
		return justID(ids)
	}
	claimed := []string{}
	start := "0-0"
	for {
		var (
			page []string
			err  error
			next string
		)
		if from != "" { // XAUTOCLAIM cannot tell consumers apart
			var pending []redis.XPendingExt
			pending, err = client.XPendingExt(ctx, &redis.XPendingExtArgs{
				Stream: stream, Group: group, Consumer: from, Idle: minIdle, Start: start, End: "+", Count: claimPage,
			}).Result()
			next = "0-0"
			if err == nil && len(pending) > 0 {
				ids := make([]string, len(pending))
				for i, p := range pending {
					ids[i] = p.ID
				}
				page, err = justID(ids)
				next = "(" + ids[len(ids)-1]
			}
		} else {
			page, next, err = client.XAutoClaimJustID(ctx, &redis.XAutoClaimArgs{
				Stream: stream, Group: group, Consumer: to, MinIdle: minIdle, Start: start, Count: claimPage,
			}).Result()
		}
		if err != nil {
			return claimed, err
		}
		claimed = append(claimed, page...)
		if next == "0-0" {
			return claimed, nil
		}
		start = next
	}
}
