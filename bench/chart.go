package main

import (
	"encoding/xml"
	"errors"
	"fmt"
	"html"
	"io"
	"slices"
	"strings"
)

// panel is one small chart: one measure of one workload, a bar per
// contender.
type panel struct {
	title    string
	workload string
	size     int
	measure  func(sample) float64
	latency  bool // a time: lower is better, shown as a duration
}

// panelRow is a row of panels that share the contenders' labels.
type panelRow struct {
	heading string
	panels  []panel
}

// Chart colours: redisbus in blue, the other Watermill Pub/Subs in orange,
// raw go-redis (no library) in hatched grey. Text and whiskers are dark on
// the chart's own white background, so the chart reads the same on a light
// or a dark page.
const (
	colourRedisbus = "#1f6feb"
	colourPeer     = "#e8710a"
	colourRaw      = "#8c959f"
	colourInk      = "#1f2328"
	colourMuted    = "#57606a"
)

func barColour(contender string) string {
	switch {
	case strings.HasPrefix(contender, "redisbus") || strings.HasPrefix(contender, "wsroute"):
		return colourRedisbus
	case strings.HasPrefix(contender, "raw"):
		return "url(#raw)"
	}
	return colourPeer
}

// chartRows are the workloads the chart shows: every throughput workload at
// every size, and latency at every rate.
func (r *report) chartRows() []panelRow {
	publish := panelRow{heading: "Publish, messages/s (higher is better)"}
	consume := panelRow{heading: "Consume through a Router, messages/s (higher is better)"}
	for _, size := range r.o.sizes {
		publish.panels = append(publish.panels, panel{title: fmt.Sprintf("W1: one per call, %d B", size), workload: w1, size: size, measure: pub})
		consume.panels = append(consume.panels, panel{title: fmt.Sprintf("W1: after publishing, %d B", size), workload: w1, size: size, measure: sub})
	}
	publish.panels = append(publish.panels, panel{title: "W3: 100 per call, 64 B", workload: w3, size: 64, measure: pub})
	consume.panels = append(consume.panels, panel{title: "W2: while publishing, 64 B", workload: w2, size: 64, measure: sub})
	latency := panelRow{heading: "Latency, publish to handler, 64 B (lower is better)"}
	for _, perSecond := range r.o.rates {
		latency.panels = append(latency.panels, panel{title: fmt.Sprintf("W4: p50 at %d msg/s", perSecond), workload: fmt.Sprintf("latency at %d msg/s", perSecond), size: 64, measure: p50, latency: true})
	}
	if len(r.o.rates) > 0 {
		perSecond := r.o.rates[0]
		latency.panels = append(latency.panels, panel{title: fmt.Sprintf("W4: p99 at %d msg/s", perSecond), workload: fmt.Sprintf("latency at %d msg/s", perSecond), size: 64, measure: p99, latency: true})
	}
	return []panelRow{publish, consume, latency}
}

// chartOrder is the contenders in the order of contenders(), then wsroute.
func chartOrder() []string {
	var names []string
	for _, c := range contenders() {
		names = append(names, c.name)
	}
	return append(names, cWSRoute)
}

func (r *report) chart() string {
	const (
		margin     = 16
		labelWidth = 272
		panelWidth = 190
		barSpace   = 122 // the rest of a panel holds the value
		rowHeight  = 16
		barHeight  = 10
	)
	rows := r.chartRows()
	columns := 0
	for _, row := range rows {
		columns = max(columns, len(row.panels))
	}
	width := margin*2 + labelWidth + columns*panelWidth

	var body strings.Builder
	y := 64
	for _, row := range rows {
		// The contenders with a value in any panel of this row.
		var names []string
		for _, name := range chartOrder() {
			for _, p := range row.panels {
				if _, ok := r.stat(p.workload, p.size, name, p.measure); ok {
					names = append(names, name)
					break
				}
			}
		}
		if len(names) == 0 {
			continue
		}
		fmt.Fprintf(&body, `<text x="%d" y="%d" font-size="13" font-weight="bold" fill="%s">%s</text>`+"\n", margin, y, colourInk, html.EscapeString(row.heading))
		y += 8
		top := y + 18 // below the panels' titles
		for i, name := range names {
			ry := top + i*rowHeight
			if i%2 == 0 {
				fmt.Fprintf(&body, `<rect x="%d" y="%d" width="%d" height="%d" fill="#f3f5f7"/>`+"\n", margin, ry, width-2*margin, rowHeight)
			}
			weight := "normal"
			if barColour(name) == colourRedisbus {
				weight = "bold"
			}
			fmt.Fprintf(&body, `<text x="%d" y="%d" text-anchor="end" font-weight="%s" fill="%s">%s</text>`+"\n", margin+labelWidth-8, ry+12, weight, colourInk, html.EscapeString(name))
		}
		for j, p := range row.panels {
			x := margin + labelWidth + j*panelWidth
			fmt.Fprintf(&body, `<text x="%d" y="%d" font-size="11" fill="%s">%s</text>`+"\n", x, y+10, colourMuted, html.EscapeString(p.title))
			stats := map[string]stat{}
			var highs []float64
			for _, name := range names {
				if st, ok := r.stat(p.workload, p.size, name, p.measure); ok && st.median > 0 {
					stats[name] = st
					highs = append(highs, st.hi)
				}
			}
			scale := panelScale(highs, p.latency)
			fmt.Fprintf(&body, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#d0d7de"/>`+"\n", x, top, x, top+len(names)*rowHeight)
			for i, name := range names {
				st, ok := stats[name]
				ry := top + i*rowHeight
				if !ok {
					fmt.Fprintf(&body, `<text x="%d" y="%d" fill="#afb8c1">–</text>`+"\n", x+4, ry+12)
					continue
				}
				at := func(v float64) float64 { return float64(x) + min(v/scale, 1)*barSpace }
				fmt.Fprintf(&body, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", x, ry+(rowHeight-barHeight)/2, at(st.median)-float64(x), barHeight, barColour(name))
				// The range over the rounds: a whisker from lowest to highest.
				mid := ry + rowHeight/2
				fmt.Fprintf(&body, `<path d="M%.1f %dH%.1fM%.1f %dV%dM%.1f %dV%d" stroke="%s" stroke-width="1.2" fill="none"/>`+"\n",
					at(st.lo), mid, at(st.hi), at(st.lo), mid-3, mid+3, at(st.hi), mid-3, mid+3, colourInk)
				value := human(st.median)
				if p.latency {
					value = dur(st.median)
				}
				if st.median > scale {
					value = "› " + value // off the scale
				}
				fmt.Fprintf(&body, `<text x="%.1f" y="%d" font-size="10.5" fill="%s">%s</text>`+"\n", at(st.hi)+4, ry+12, colourInk, html.EscapeString(value))
			}
		}
		y = top + len(names)*rowHeight + 30
	}
	height := y + 4

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="Helvetica, Arial, sans-serif" font-size="11.5">`+"\n", width, height, width, height)
	b.WriteString(`<defs><pattern id="raw" width="5" height="5" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">` +
		`<rect width="5" height="5" fill="#d0d7de"/><rect width="2.5" height="5" fill="` + colourRaw + `"/></pattern></defs>` + "\n")
	// Its own background: legible on a light or a dark page.
	fmt.Fprintf(&b, `<rect x="0.5" y="0.5" width="%d" height="%d" rx="8" fill="#ffffff" stroke="#d0d7de"/>`+"\n", width-1, height-1)
	fmt.Fprintf(&b, `<text x="%d" y="26" font-size="15" font-weight="bold" fill="%s">redisbus benchmarks, %s</text>`+"\n", margin, colourInk, r.when.UTC().Format("2006-01-02"))
	fmt.Fprintf(&b, `<text x="%d" y="44" fill="%s">median of %d round(s), whisker: lowest to highest; %s, %d cores; see BENCHMARKS.md</text>`+"\n",
		margin, colourMuted, r.o.rounds, html.EscapeString(r.machine.cpu), r.machine.cores)
	legend := []struct{ fill, text string }{{colourRedisbus, "redisbus"}, {colourPeer, "other Watermill Pub/Subs"}, {"url(#raw)", "raw go-redis, no library"}}
	// Right-aligned; text width estimated at 6.5 px a character.
	entryWidth := func(text string) float64 { return 19 + 6.5*float64(len(text)) + 16 }
	lx := float64(width - margin)
	for _, l := range legend {
		lx -= entryWidth(l.text)
	}
	for _, l := range legend {
		fmt.Fprintf(&b, `<rect x="%.0f" y="17" width="14" height="10" fill="%s"/><text x="%.0f" y="26" fill="%s">%s</text>`+"\n", lx, l.fill, lx+19, colourInk, l.text)
		lx += entryWidth(l.text)
	}
	b.WriteString(body.String())
	b.WriteString("</svg>\n")
	return b.String()
}

// panelScale is the value a full bar stands for. Latency panels cap it, so
// that one contender far off (a backlog building up) does not flatten the
// others: bars past the cap end at the edge, marked "›".
func panelScale(highs []float64, latency bool) float64 {
	if len(highs) == 0 {
		return 1
	}
	top := slices.Max(highs)
	if latency {
		sorted := slices.Sorted(slices.Values(highs))
		typical := sorted[len(sorted)/2]
		top = min(top, 4*typical)
	}
	if top <= 0 {
		return 1
	}
	return top
}

// wellFormed reports whether svg parses as XML, as a browser needs it to.
func wellFormed(svg string) error {
	d := xml.NewDecoder(strings.NewReader(svg))
	for {
		_, err := d.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
