package wsroute

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"net/http"
	"time"
)

//go:embed client/wsroute.js
var clientScript []byte

// clientScriptETag names this build's script, so that a browser revalidates
// it cheaply and never keeps one of an older build.
var clientScriptETag = func() string {
	sum := sha256.Sum256(clientScript)
	return `"` + hex.EncodeToString(sum[:8]) + `"`
}()

// ClientScript returns an http.Handler serving the browser client of the
// wsroute.v1 protocol (docs/wsroute-protocol.md): a dependency-free ES
// module, about 300 lines, that keeps the position of every stream it
// follows, reconnects with capped exponential backoff and jitter, and
// recovers what it missed, on any node. Mount it where pages import it:
//
//	mux.Handle("/wsroute.js", wsroute.ClientScript())
//
//	<script type="module">
//	  import { WsrouteClient } from '/wsroute.js';
//	  new WsrouteClient('/ws', {onMessage: (m) => console.log(m.stream, m.data, m.recovered)}).connect();
//	</script>
//
// It answers GET and HEAD as text/javascript, with an ETag (browsers
// revalidate it and get 304 Not Modified while it is unchanged); other
// methods get 405.
func ClientScript() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "text/javascript; charset=utf-8")
		h.Set("ETag", clientScriptETag)
		h.Set("Cache-Control", "no-cache") // revalidate: a new build's script is used at once
		h.Set("X-Content-Type-Options", "nosniff")
		http.ServeContent(w, r, "wsroute.js", time.Time{}, bytes.NewReader(clientScript))
	})
}
