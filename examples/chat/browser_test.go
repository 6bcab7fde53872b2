//go:build browser && unix

package main

import (
	"context"
	"testing"
	"time"

	"github.com/redisbus/watermill-redisbus/internal/browsertest"
)

// Run with: go test -tags browser -run Browser ./examples/chat
// It needs Debian's chromium (apt-get install chromium), which .ci/run
// installs.

// TestBrowserChatAcrossNodes opens the page of each of two nodes (as
// `go run ./examples/chat` starts them) in headless Chromium, connects
// alice to one and bob to the other, joins both to the lobby, and types a
// message in alice's page that bob's page shows.
func TestBrowserChatAcrossNodes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	nodes := startNodes(t, "", 2)
	browser := browsertest.StartChromium(t, ctx)
	alice := browser.Open(t, ctx, nodes[0].url, "login")
	bob := browser.Open(t, ctx, nodes[1].url, "login")

	for name, tab := range map[string]*browsertest.Tab{"alice": alice, "bob": bob} {
		tab.Eval(t, ctx, `document.getElementById('name').value = '`+name+`'; document.getElementById('login').requestSubmit()`)
		tab.WaitForText(t, ctx, "log", "as "+name)
	}
	alice.Eval(t, ctx, `document.getElementById('join').requestSubmit()`)
	alice.WaitForText(t, ctx, "log", "[lobby] alice@"+nodes[0].id+" joined")
	bob.Eval(t, ctx, `document.getElementById('join').requestSubmit()`)
	bob.WaitForText(t, ctx, "log", "[lobby] bob@"+nodes[1].id+" joined")
	alice.WaitForText(t, ctx, "log", "[lobby] bob@"+nodes[1].id+" joined")

	alice.Eval(t, ctx, `document.getElementById('text').value = 'hello from chromium'; document.getElementById('say').requestSubmit()`)
	bob.WaitForText(t, ctx, "log", "[lobby] alice@"+nodes[0].id+": hello from chromium")
	alice.WaitForText(t, ctx, "log", "[lobby] alice@"+nodes[0].id+": hello from chromium")
}
