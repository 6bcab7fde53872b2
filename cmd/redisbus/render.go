package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
)

// table writes aligned columns: the header, then each row.
func table(w io.Writer, header []string, rows [][]string) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, row := range rows {
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	_ = tw.Flush()
}

// age formats milliseconds for people: 850ms, 12s, 3m05s, 2h07m, 3d04h.
func age(ms int64) string {
	d := time.Duration(ms) * time.Millisecond
	switch {
	case ms < 0:
		return "never"
	case d < time.Second:
		return fmt.Sprintf("%dms", ms)
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
}

func itoa[T int | int64](n T) string { return strconv.FormatInt(int64(n), 10) }

// lagText shows a lag, "?" when Redis cannot tell it (-1).
func lagText(lag int64) string {
	if lag < 0 {
		return "?"
	}
	return itoa(lag)
}

// oldestPendingText shows the age of the oldest pending entry, "-" when
// none is pending.
func oldestPendingText(pending, ageMS int64) string {
	if pending == 0 {
		return "-"
	}
	return age(ageMS)
}

// dash shows an empty value as "-" so that columns stay aligned.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// payloadText shows a payload on one line: text as it is when it is
// printable, else quoted; binary as base64:….
func payloadText(m Message, limit int) string {
	if m.DecodeError != "" {
		return truncate("(not a redisbus message: "+m.DecodeError+") "+metadataText(m.Fields), limit)
	}
	if m.Payload == nil {
		return "base64:" + truncate(m.PayloadBase64, limit)
	}
	text := *m.Payload
	if strings.IndexFunc(text, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		text = strconv.Quote(text)
	}
	return truncate(text, limit)
}

// metadataText shows metadata as k=v pairs in key order.
func metadataText(md map[string]string) string {
	pairs := make([]string, 0, len(md))
	for _, k := range slices.Sorted(maps.Keys(md)) {
		pairs = append(pairs, k+"="+strconv.Quote(md[k]))
	}
	return strings.Join(pairs, " ")
}

// truncate shortens s to limit runes (limit ≤ 0: no limit).
func truncate(s string, limit int) string {
	if limit <= 0 || len(s) <= limit {
		return s
	}
	r := []rune(s)
	if len(r) <= limit {
		return s
	}
	return string(r[:limit-1]) + "…"
}
