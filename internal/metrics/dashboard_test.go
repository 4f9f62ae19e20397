package metrics_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/patientmsg/gateway/internal/metrics"
	"github.com/patientmsg/gateway/internal/ratelimit"
)

var grafana = filepath.Join("..", "..", "deployments", "grafana")

// noSenders is a sender collector's source with no senders.
type noSenders struct{}

func (noSenders) Status(context.Context) ([]ratelimit.SenderStatus, error) { return nil, nil }

// registered is every metric name the gateway's registry may expose, as a
// process registers it (with the queue and sender collectors).
func registered(t *testing.T) []string {
	t.Helper()
	m := metrics.New()
	if err := m.Register(metrics.NewQueueCollector(queues{})); err != nil {
		t.Fatal(err)
	}
	if err := m.Register(metrics.NewSenderCollector(noSenders{})); err != nil {
		t.Fatal(err)
	}
	return m.Names()
}

type panel struct {
	Title   string  `json:"title"`
	Type    string  `json:"type"`
	Panels  []panel `json:"panels"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

// metricName finds the metric names in a PromQL expression: identifiers
// of the gateway's, the Go runtime's or the process's families.
var metricName = regexp.MustCompile(`\b(?:gateway|go|process)_[a-zA-Z0-9_]+\b`)

func TestEveryDashboardPanelQueriesAMetricTheGatewayRegisters(t *testing.T) {
	names := registered(t)
	known := func(n string) bool {
		if slices.Contains(names, n) {
			return true
		}
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(n, suffix); ok && slices.Contains(names, base) {
				return true
			}
		}
		return false
	}
	raw, err := os.ReadFile(filepath.Join(grafana, "dashboards", "gateway.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID    string  `json:"uid"`
		Panels []panel `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("gateway.json: %v", err)
	}
	if dash.UID == "" {
		t.Error("the dashboard has no uid: provisioning would make a new one each time")
	}
	var all []panel
	var walk func(ps []panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			all = append(all, p)
			walk(p.Panels)
		}
	}
	walk(dash.Panels)
	queried := map[string]bool{}
	graphs := 0
	for _, p := range all {
		if p.Type == "row" {
			continue
		}
		graphs++
		if len(p.Targets) == 0 {
			t.Errorf("panel %q queries nothing", p.Title)
		}
		for _, target := range p.Targets {
			found := metricName.FindAllString(target.Expr, -1)
			if len(found) == 0 {
				t.Errorf("panel %q: %q names no metric", p.Title, target.Expr)
			}
			for _, n := range found {
				queried[n] = true
				if !known(n) {
					t.Errorf("panel %q: %s is not a metric the gateway registers", p.Title, n)
				}
			}
		}
	}
	if graphs < 10 {
		t.Errorf("only %d panels: is the test reading the right thing?", graphs)
	}
	// Every metric of the gateway's own has a panel.
	for _, n := range names {
		if !strings.HasPrefix(n, metrics.Namespace+"_") {
			continue
		}
		used := queried[n] || queried[n+"_bucket"] || queried[n+"_count"]
		if !used {
			t.Errorf("no panel shows %s", n)
		}
	}
}

func TestTheGrafanaProvisioningFilesLoad(t *testing.T) {
	for _, f := range []string{"dashboards/gateway.yaml", "datasources/prometheus.yaml"} {
		raw, err := os.ReadFile(filepath.Join(grafana, "provisioning", f))
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			APIVersion  int              `yaml:"apiVersion"`
			Providers   []map[string]any `yaml:"providers"`
			Datasources []map[string]any `yaml:"datasources"`
		}
		if err := yaml.Unmarshal(raw, &doc); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if doc.APIVersion != 1 || len(doc.Providers)+len(doc.Datasources) == 0 {
			t.Errorf("%s: apiVersion %d, %d providers, %d data sources", f, doc.APIVersion, len(doc.Providers), len(doc.Datasources))
		}
	}
}
