package main

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The commands of docs/console.md are what operators copy: each must be a
// command with flags and arguments the console accepts.
func TestDocumentedCommandsParse(t *testing.T) {
	doc, err := os.ReadFile("../../docs/console.md")
	require.NoError(t, err)
	blocks := regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(string(doc), -1)
	commands := 0
	for _, block := range blocks {
		for _, line := range strings.Split(block[1], "\n") {
			line, _, _ = strings.Cut(line, " #")
			line, _, _ = strings.Cut(line, " | ")
			args := singleDash(shellWords(strings.TrimSpace(line)))
			if len(args) == 0 || args[0] != "redisbus" {
				continue
			}
			commands++
			root := newRootCommand(&console{})
			cmd, rest, err := root.Find(args[1:])
			require.NoError(t, err, line)
			require.NotEqual(t, root, cmd, "%s: no command", line)
			require.NoError(t, cmd.ParseFlags(rest), line)
			assert.NoError(t, cmd.ValidateArgs(cmd.Flags().Args()), line)
		}
	}
	assert.Greater(t, commands, 20)
}

// shellWords splits line as sh does for the simple quoting the docs use.
func shellWords(line string) []string {
	var words []string
	for _, m := range regexp.MustCompile(`'([^']*)'|(\S+)`).FindAllStringSubmatch(line, -1) {
		if m[2] != "" {
			words = append(words, m[2])
		} else {
			words = append(words, m[1])
		}
	}
	return words
}
