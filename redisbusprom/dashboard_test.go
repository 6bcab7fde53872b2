package redisbusprom_test

import (
	"encoding/json"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisbus/watermill-redisbus/redisbusprom"
)

type dashboard struct {
	Title, UID string
	Templating struct {
		List []struct{ Name, Type string }
	}
	Panels []struct {
		Type, Title string
		GridPos     *struct{ H, W, X, Y int }
		Targets     []struct{ Expr, RefID string }
	}
}

// exported returns the names of the series the collector describes.
func exported(t *testing.T) map[string]bool {
	collector, err := redisbusprom.NewCollector(redisbusprom.Config{})
	require.NoError(t, err)
	descs := make(chan *prometheus.Desc, 100)
	collector.Describe(descs)
	close(descs)
	names := map[string]bool{}
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	for d := range descs {
		names[fqName.FindStringSubmatch(d.String())[1]] = true
	}
	require.NotEmpty(t, names)
	return names
}

// The dashboard loads (valid JSON, the shape Grafana imports), every query
// names series the collector exports, and every series has a panel.
func TestGrafanaDashboardShowsTheCollectorsSeries(t *testing.T) {
	var d dashboard
	require.NoError(t, json.Unmarshal(redisbusprom.GrafanaDashboard, &d))
	assert.NotEmpty(t, d.Title)
	assert.NotEmpty(t, d.UID)
	var variables []string
	for _, v := range d.Templating.List {
		variables = append(variables, v.Name)
	}
	assert.ElementsMatch(t, []string{"datasource", "stream"}, variables)

	series := exported(t)
	shown := map[string]bool{}
	name := regexp.MustCompile(`\bredisbus_[a-z0-9_]+`)
	for _, p := range d.Panels {
		require.NotNil(t, p.GridPos, "panel %q has no position", p.Title)
		if p.Type == "row" {
			continue
		}
		require.NotEmpty(t, p.Targets, "panel %q has no query", p.Title)
		for _, target := range p.Targets {
			assert.Equal(t, strings.Count(target.Expr, "("), strings.Count(target.Expr, ")"), target.Expr)
			assert.Equal(t, strings.Count(target.Expr, "{"), strings.Count(target.Expr, "}"), target.Expr)
			for _, n := range name.FindAllString(target.Expr, -1) {
				assert.True(t, series[n], "panel %q queries %s, which the collector does not export", p.Title, n)
				shown[n] = true
			}
		}
	}
	var missing []string
	for n := range series {
		if !shown[n] {
			missing = append(missing, n)
		}
	}
	sort.Strings(missing)
	assert.Empty(t, missing, "series no panel shows")
}
