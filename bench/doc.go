// Command bench measures redisbus against watermill-redisstream (on its
// defaults, and tuned), Watermill's GoChannel and raw go-redis, interleaved
// in one run against one Redis, and writes the results as BENCHMARKS.md and
// an SVG chart.
//
// BENCHMARKS.md's section on Watermill's own benchmark tool is not this
// program's: it is watermill-benchmark.md beside this file, written by hand
// from runs of that tool, and a run places it into the report as it is.
//
// It is a module of its own so that the peers it compares against never
// enter the library's go.mod. From the repository root:
//
//	go run ./bench            # the full run (see BENCHMARKS.md for flags)
//	go run ./bench -quick     # a small correctness smoke test, as CI runs it
package main
