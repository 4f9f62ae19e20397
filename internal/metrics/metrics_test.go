package metrics_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/patientmsg/gateway/internal/metrics"
)

func TestProviderErrorCodesAreABoundedSet(t *testing.T) {
	m := metrics.New()
	m.ProviderError("sms", "21211")
	m.ProviderError("sms", "+14155550100")    // a number, never a code
	m.ProviderError("sms", "invalid To: +1…") // free text
	m.ProviderError("email", "smtp_550")
	for i := range metrics.MaxCodesPerChannel + 5 {
		m.ProviderError("wechat", fmt.Sprint(40000+i))
	}
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	perChannel := map[string]int{}
	codes := map[string]bool{}
	for _, mf := range mfs {
		if mf.GetName() != "gateway_provider_errors_total" {
			continue
		}
		for _, s := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range s.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			perChannel[labels["channel"]]++
			codes[labels["channel"]+"/"+labels["code"]] = true
		}
	}
	for _, want := range []string{"sms/21211", "sms/other", "email/smtp_550", "wechat/other", "wechat/40000"} {
		if !codes[want] {
			t.Errorf("no series %s; have %v", want, codes)
		}
	}
	if perChannel["wechat"] > metrics.MaxCodesPerChannel+1 {
		t.Errorf("wechat has %d code series, want at most %d", perChannel["wechat"], metrics.MaxCodesPerChannel+1)
	}
	for c := range codes {
		if strings.Contains(c, "+") || strings.Contains(c, " ") {
			t.Errorf("a code label holds %q", c)
		}
	}
}

func TestAMissingMetricsValueDoesNothing(t *testing.T) {
	var m *metrics.Metrics
	m.MessageAccepted("sms", "normal")
	m.SendOutcome("sms", metrics.Accepted)
	m.ProviderError("sms", "21211")
	m.Delivered("sms", time.Second)
	m.EscalationAcknowledged(time.Minute)
	m.BroadcastPeople("sent", 3)
	if err := m.Register(nil); err != nil {
		t.Fatal(err)
	}
}

// queues is an inspector whose "gw:broken" queue cannot be read.
type queues struct{}

func (queues) Queues() ([]string, error) { return []string{"gw:normal", "gw:broken"}, nil }
func (queues) GetQueueInfo(q string) (*asynq.QueueInfo, error) {
	if q == "gw:broken" {
		return nil, errors.New("connection reset")
	}
	return &asynq.QueueInfo{Queue: q, Size: 7, Pending: 5, Scheduled: 2, Latency: 1500 * time.Millisecond}, nil
}

func TestAQueueThatCannotBeReadIsCountedAndTheScrapeGoesOn(t *testing.T) {
	m := metrics.New()
	if err := m.Register(metrics.NewQueueCollector(queues{})); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := m.Registry().Gather(); err != nil {
			t.Fatalf("the scrape failed: %v", err)
		}
	}
	want := `
# HELP gateway_queue_latency_seconds Age of the queue's oldest pending task.
# TYPE gateway_queue_latency_seconds gauge
gateway_queue_latency_seconds{queue="gw:normal"} 1.5
# HELP gateway_queue_scrape_errors_total Scrapes that could not read a queue ("all": the list of queues).
# TYPE gateway_queue_scrape_errors_total counter
gateway_queue_scrape_errors_total{queue="gw:broken"} 3
# HELP gateway_queue_size Tasks in the queue, in every state.
# TYPE gateway_queue_size gauge
gateway_queue_size{queue="gw:normal"} 7
`
	// The third scrape is this one.
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want),
		"gateway_queue_latency_seconds", "gateway_queue_scrape_errors_total", "gateway_queue_size"); err != nil {
		t.Error(err)
	}
	problems, err := testutil.GatherAndLint(m.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}
