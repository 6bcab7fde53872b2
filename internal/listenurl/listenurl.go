// Package listenurl turns a listener's address into a URL a browser on the
// same machine can open.
package listenurl

import (
	"net"
	"strconv"
)

// HTTP returns the http:// URL of listener, which was asked to listen on
// requested. A host name asked for ("localhost:8081") is kept, with the
// port the listener got; a listener on every interface (":8081",
// "0.0.0.0:8081", "[::]:8081") is reached at localhost, since a browser
// cannot open http://[::]:8081; an IP address stays as it is.
func HTTP(requested string, listener net.Addr) string {
	host, port, err := net.SplitHostPort(listener.String())
	if err != nil {
		return "http://" + listener.String()
	}
	if asked, _, err := net.SplitHostPort(requested); err == nil && asked != "" && net.ParseIP(asked) == nil {
		host = asked
	} else if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// Port returns the port of a listener at addr, or 0.
func Port(addr net.Addr) int {
	if tcp, ok := addr.(*net.TCPAddr); ok {
		return tcp.Port
	}
	_, port, _ := net.SplitHostPort(addr.String())
	n, _ := strconv.Atoi(port)
	return n
}
