package metrics

import (
	"context"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/patientmsg/gateway/internal/ratelimit"
)

// QueueInspector is what the queue collector reads (*asynq.Inspector).
type QueueInspector interface {
	Queues() ([]string, error)
	GetQueueInfo(queue string) (*asynq.QueueInfo, error)
}

// QueueCollector reports each task queue's size, tasks by state, latency
// (the age of its oldest pending task) and whether it is paused, read
// through the Asynq Inspector at every scrape. A queue that cannot be read
// is left out of that scrape and counted in
// gateway_queue_scrape_errors_total; the other queues and every other
// metric are still reported.
type QueueCollector struct {
	in      QueueInspector
	size    *prometheus.Desc
	tasks   *prometheus.Desc
	latency *prometheus.Desc
	paused  *prometheus.Desc
	memory  *prometheus.Desc
	errs    *prometheus.CounterVec
}

// NewQueueCollector returns a collector reading in.
func NewQueueCollector(in QueueInspector) *QueueCollector {
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(Namespace, "queue", name), help, labels, nil)
	}
	return &QueueCollector{in: in,
		size:    desc("size", "Tasks in the queue, in every state.", "queue"),
		tasks:   desc("tasks", "Tasks in the queue by state (pending, active, scheduled, retry, archived, completed, aggregating).", "queue", "state"),
		latency: desc("latency_seconds", "Age of the queue's oldest pending task.", "queue"),
		paused:  desc("paused", "1 when the queue is paused.", "queue"),
		memory:  desc("memory_bytes", "Redis memory the queue's tasks take (sampled).", "queue"),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Subsystem: "queue", Name: "scrape_errors_total",
			Help: "Scrapes that could not read a queue (\"all\": the list of queues)."}, []string{"queue"}),
	}
}

// Describe implements prometheus.Collector.
func (c *QueueCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.size, c.tasks, c.latency, c.paused, c.memory} {
		ch <- d
	}
	c.errs.Describe(ch)
}

// Collect implements prometheus.Collector.
func (c *QueueCollector) Collect(ch chan<- prometheus.Metric) {
	defer c.errs.Collect(ch)
	queues, err := c.in.Queues()
	if err != nil {
		c.errs.WithLabelValues("all").Inc()
		return
	}
	for _, q := range queues {
		info, err := c.in.GetQueueInfo(q)
		if err != nil {
			c.errs.WithLabelValues(bounded(q)).Inc()
			continue
		}
		q = bounded(q)
		gauge := func(d *prometheus.Desc, v float64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append([]string{q}, labels...)...)
		}
		gauge(c.size, float64(info.Size))
		gauge(c.latency, info.Latency.Seconds())
		gauge(c.memory, float64(info.MemoryUsage))
		paused := 0.0
		if info.Paused {
			paused = 1
		}
		gauge(c.paused, paused)
		for state, n := range map[string]int{"pending": info.Pending, "active": info.Active, "scheduled": info.Scheduled,
			"retry": info.Retry, "archived": info.Archived, "completed": info.Completed, "aggregating": info.Aggregating} {
			gauge(c.tasks, float64(n), state)
		}
	}
}

// SenderStatuses is what the sender collector reads (*ratelimit.Senders).
type SenderStatuses interface {
	Status(ctx context.Context) ([]ratelimit.SenderStatus, error)
}

// SenderCollector reports each paced sender's state at every scrape: its
// configured and effective rate, the back-pressure a provider's throttles
// put on it, the tokens it has for a burst, a provider's Retry-After in
// force, and its daily quota and use. Senders are labelled by channel (a
// channel has one sender): a sender's own key holds its from-number.
type SenderCollector struct {
	s          SenderStatuses
	configured *prometheus.Desc
	effective  *prometheus.Desc
	pressure   *prometheus.Desc
	tokens     *prometheus.Desc
	backoff    *prometheus.Desc
	quota      *prometheus.Desc
	used       *prometheus.Desc
	errs       prometheus.Counter
}

// NewSenderCollector returns a collector reading s.
func NewSenderCollector(s SenderStatuses) *SenderCollector {
	desc := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(Namespace, "sender", name), help, []string{"channel"}, nil)
	}
	return &SenderCollector{s: s,
		configured: desc("configured_rate_per_second", "The sender's configured rate."),
		effective:  desc("rate_per_second", "The sender's rate in force now (lower after provider throttles)."),
		pressure:   desc("backpressure_ratio", "How far provider throttles have slowed the sender: 0 none, towards 1 the slowest."),
		tokens:     desc("tokens", "Sends the sender could make at once now (its token bucket)."),
		backoff:    desc("backoff_seconds", "Time left of a provider's Retry-After in force (0: none)."),
		quota:      desc("daily_quota", "The sender's daily quota (0: none)."),
		used:       desc("daily_quota_used", "What the sender has used of its daily quota today."),
		errs: prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Subsystem: "sender", Name: "scrape_errors_total",
			Help: "Scrapes that could not read the senders' state."}),
	}
}

// Describe implements prometheus.Collector.
func (c *SenderCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.configured, c.effective, c.pressure, c.tokens, c.backoff, c.quota, c.used} {
		ch <- d
	}
	c.errs.Describe(ch)
}

// Collect implements prometheus.Collector.
func (c *SenderCollector) Collect(ch chan<- prometheus.Metric) {
	defer c.errs.Collect(ch)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	all, err := c.s.Status(ctx)
	if err != nil {
		c.errs.Inc()
		return
	}
	now := time.Now()
	for _, st := range all {
		channel := bounded(st.Channel)
		gauge := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, channel)
		}
		gauge(c.configured, st.ConfiguredPerSecond)
		gauge(c.effective, st.EffectivePerSecond)
		pressure := 0.0
		if st.ConfiguredPerSecond > 0 {
			pressure = max(0, 1-st.EffectivePerSecond/st.ConfiguredPerSecond)
		}
		gauge(c.pressure, pressure)
		gauge(c.tokens, st.Tokens)
		backoff := 0.0
		if st.BackoffUntil != nil && st.BackoffUntil.After(now) {
			backoff = st.BackoffUntil.Sub(now).Seconds()
		}
		gauge(c.backoff, backoff)
		gauge(c.quota, float64(st.PerDay))
		gauge(c.used, float64(st.UsedToday))
	}
}
