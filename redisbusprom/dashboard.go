package redisbusprom

import _ "embed"

// GrafanaDashboard is a Grafana dashboard (JSON, schema 39) of every series
// the Collector exports: consumer groups' lag, pending entries and their
// age, dead letters, the components' rates, Pub/Sub drops and loss
// windows, wsroute routing. Import it in Grafana, or provision it from
// redisbusprom/grafana/redisbus.json; it asks for a Prometheus data source.
//
//go:embed grafana/redisbus.json
var GrafanaDashboard []byte
