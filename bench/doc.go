// Command bench measures redisbus against watermill-redisstream, Watermill's
// GoChannel and raw go-redis, interleaved in one run against one Redis, and
// writes the results as Markdown, an SVG chart and BENCHMARKS.md.
//
// It is a module of its own so that the peers it compares against never
// enter the library's go.mod. From the repository root:
//
//	go run ./bench            # the full run (see BENCHMARKS.md for flags)
//	go run ./bench -quick     # a small correctness smoke test, as CI runs it
package main
