// Package metrics is the gateway's Prometheus instrumentation: one
// registry of its own (never the global one), the counters and histograms
// the domain packages feed through small hook methods, and collectors that
// read the task queues and the senders' pacing when Prometheus scrapes.
//
// Every hook is a method on *Metrics that does nothing on a nil receiver,
// so a domain package holds a *Metrics field and calls it without caring
// whether metrics are on; no domain package imports Prometheus.
//
// No label ever carries patient data: labels are channel names, statuses,
// classes, kinds, queue names, route templates and provider error codes
// (bounded: see ProviderError). No label is a tenant, an address or an id.
package metrics

import (
	"net/http"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Namespace prefixes every metric of the gateway.
const Namespace = "gateway"

// Outcomes of a send attempt (SendOutcome's class).
const (
	Accepted   = "accepted"   // the provider took the message
	Failed     = "failed"     // the provider refused it or could not be reached
	Throttled  = "throttled"  // the provider asked the sender to slow down
	Suppressed = "suppressed" // the recipient opted out: not sent
)

// Results of a provider webhook (Webhook's result).
const (
	WebhookVerified = "verified" // the signature held and the request was taken
	WebhookRejected = "rejected" // a bad or missing signature (401/403)
	WebhookRefused  = "refused"  // Redis was too full or away: try again later
	WebhookFailed   = "failed"   // signed, but not taken (bad request, error)
)

// Other is the label value of anything outside a label's bounded set.
const Other = "other"

// MaxCodesPerChannel bounds the provider error codes kept per channel: the
// first codes seen keep their own label value, later new ones are Other.
const MaxCodesPerChannel = 40

// Metrics holds the gateway's registry and its instruments.
type Metrics struct {
	reg *prometheus.Registry

	accepted     *prometheus.CounterVec
	statuses     *prometheus.CounterVec
	sends        *prometheus.CounterVec
	providerTime *prometheus.HistogramVec
	providerErrs *prometheus.CounterVec
	delivery     *prometheus.HistogramVec
	inbound      *prometheus.CounterVec
	webhooks     *prometheus.CounterVec
	consent      *prometheus.CounterVec
	escOpened    *prometheus.CounterVec
	escAcked     prometheus.Counter
	escLevel     prometheus.Counter
	escAckTime   prometheus.Histogram
	people       *prometheus.CounterVec
	senderWaits  *prometheus.CounterVec

	codesMu sync.Mutex
	codes   map[string]map[string]bool
}

// New returns metrics on a registry of their own, with the Go runtime and
// process collectors.
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), codes: map[string]map[string]bool{}}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help}, labels)
	}
	histogram := func(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: name, Help: help, Buckets: buckets}, labels)
	}
	m.accepted = counter("messages_accepted_total", "Messages accepted (a new ledger record), by channel and priority.", "channel", "priority")
	m.statuses = counter("message_status_changes_total", "Statuses messages entered (queued, scheduled, sent, delivered, undelivered, failed, canceled, suppressed).", "status")
	m.sends = counter("send_attempts_total", "Send attempts by channel and outcome class (accepted, failed, throttled, suppressed).", "channel", "class")
	m.providerTime = histogram("provider_request_duration_seconds", "How long a provider took to answer a send, by channel.",
		[]float64{.025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}, "channel")
	m.providerErrs = counter("provider_errors_total", "Provider errors by channel and provider error code (codes beyond the first few per channel are \"other\").", "channel", "code")
	m.delivery = histogram("delivery_latency_seconds", "Time from the API accepting a message to the provider reporting it delivered, by channel.",
		[]float64{1, 2, 5, 10, 30, 60, 120, 300, 900, 1800, 3600, 4 * 3600}, "channel")
	m.inbound = counter("inbound_total", "What providers reported, by channel and kind (reply, opt_out, opt_in, help, possible_opt_out, duplicate, status, answer, unfollow).", "channel", "kind")
	m.webhooks = counter("webhook_requests_total", "Provider webhook requests by route and verification result (verified, rejected, refused, failed).", "route", "result")
	m.consent = counter("consent_changes_total", "Consent changes by address kind (phone, email, wechat) and change (opt_out, opt_in).", "address", "change")
	m.escOpened = counter("escalations_opened_total", "Escalations opened, by reason (urgent_reply, questionnaire).", "reason")
	m.escAcked = prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "escalations_acknowledged_total", Help: "Escalations acknowledged."})
	m.escLevel = prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "escalations_escalated_total", Help: "Escalations passed on to the next on-call target because nobody acknowledged in time."})
	m.escAckTime = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Name: "escalation_ack_seconds",
		Help: "Time from an escalation's opening to its acknowledgement.", Buckets: []float64{30, 60, 120, 300, 600, 900, 1800, 3600, 2 * 3600, 4 * 3600}})
	m.people = counter("broadcast_people_total", "Broadcast people entering each state (pending, queued, sent, delivered, acknowledged, unreachable, suppressed, canceled).", "state")
	m.senderWaits = counter("sender_waits_total", "Sends held back by their sender's pacing, by channel and reason (rate, daily_quota, provider_backoff).", "channel", "reason")

	m.reg.MustRegister(m.accepted, m.statuses, m.sends, m.providerTime, m.providerErrs, m.delivery, m.inbound,
		m.webhooks, m.consent, m.escOpened, m.escAcked, m.escLevel, m.escAckTime, m.people, m.senderWaits,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry is the gateway's registry (tests gather from it).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus exposition formats. A
// collector that fails loses its own series only: the scrape goes on.
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return nil // no metrics: /metrics is not served
	}
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Register adds a collector of the gateway's own (the queues, the senders).
func (m *Metrics) Register(c prometheus.Collector) error {
	if m == nil {
		return nil
	}
	return m.reg.Register(c)
}

// labelValue matches what a label value may be: a short lower-case word
// (a channel, a status, a priority). Anything else is Other, so a
// mistake upstream can never put free text or an address in a label.
var labelValue = regexp.MustCompile(`^[a-z][a-z0-9_:.-]{0,31}$`)

func bounded(v string) string {
	if labelValue.MatchString(v) {
		return v
	}
	return Other
}

// MessageAccepted counts a new message.
func (m *Metrics) MessageAccepted(channel, priority string) {
	if m == nil {
		return
	}
	if priority == "" {
		priority = "normal"
	}
	m.accepted.WithLabelValues(bounded(channel), bounded(priority)).Inc()
}

// StatusEntered counts a message entering a status.
func (m *Metrics) StatusEntered(status string) {
	if m == nil {
		return
	}
	m.statuses.WithLabelValues(bounded(status)).Inc()
}

// Delivered observes the time from a message's acceptance to its delivery.
func (m *Metrics) Delivered(channel string, latency time.Duration) {
	if m == nil || latency < 0 {
		return
	}
	m.delivery.WithLabelValues(bounded(channel)).Observe(latency.Seconds())
}

// SendOutcome counts a send attempt's outcome (Accepted, Failed,
// Throttled, Suppressed).
func (m *Metrics) SendOutcome(channel, class string) {
	if m == nil {
		return
	}
	m.sends.WithLabelValues(bounded(channel), bounded(class)).Inc()
}

// ProviderRequest observes how long a provider took to answer a send.
func (m *Metrics) ProviderRequest(channel string, took time.Duration) {
	if m == nil {
		return
	}
	m.providerTime.WithLabelValues(bounded(channel)).Observe(took.Seconds())
}

// providerCode matches the codes a provider error may keep: a provider's
// number of up to six digits (Twilio 21211, WeChat 45009, -1), an SMTP
// reply ("smtp_550") or a gateway code word ("timeout"). Longer digit runs
// (which could be a phone number) and free text are Other.
var providerCode = regexp.MustCompile(`^(-?[0-9]{1,6}|smtp_[0-9]{3}|[a-z][a-z_]{0,31})$`)

// ProviderError counts a provider error by its code. The label set is
// bounded: a code of an unexpected shape is Other, and so is every new
// code once a channel has MaxCodesPerChannel of them.
func (m *Metrics) ProviderError(channel, code string) {
	if m == nil {
		return
	}
	channel = bounded(channel)
	m.providerErrs.WithLabelValues(channel, m.code(channel, code)).Inc()
}

func (m *Metrics) code(channel, code string) string {
	if !providerCode.MatchString(code) {
		return Other
	}
	m.codesMu.Lock()
	defer m.codesMu.Unlock()
	seen := m.codes[channel]
	if seen == nil {
		seen = map[string]bool{}
		m.codes[channel] = seen
	}
	if !seen[code] {
		if len(seen) >= MaxCodesPerChannel {
			return Other
		}
		seen[code] = true
	}
	return code
}

// Inbound counts what a provider reported, by kind.
func (m *Metrics) Inbound(channel, kind string) {
	if m == nil {
		return
	}
	m.inbound.WithLabelValues(bounded(channel), bounded(kind)).Inc()
}

// Webhook counts a provider webhook request by its route template and
// what came of its verification.
func (m *Metrics) Webhook(route, result string) {
	if m == nil {
		return
	}
	if !strings.HasPrefix(route, "/") || len(route) > 64 {
		route = Other
	}
	m.webhooks.WithLabelValues(route, bounded(result)).Inc()
}

// ConsentChanged counts an opt-out or an opt-in, by the kind of address.
func (m *Metrics) ConsentChanged(addressKind string, optedOut bool) {
	if m == nil {
		return
	}
	change := "opt_in"
	if optedOut {
		change = "opt_out"
	}
	m.consent.WithLabelValues(bounded(addressKind), change).Inc()
}

// EscalationOpened counts an escalation opened for reason (urgent_reply,
// questionnaire).
func (m *Metrics) EscalationOpened(reason string) {
	if m == nil {
		return
	}
	m.escOpened.WithLabelValues(bounded(reason)).Inc()
}

// EscalationAcknowledged counts an acknowledgement and observes the time
// it took.
func (m *Metrics) EscalationAcknowledged(after time.Duration) {
	if m == nil {
		return
	}
	m.escAcked.Inc()
	if after >= 0 {
		m.escAckTime.Observe(after.Seconds())
	}
}

// EscalationEscalated counts an escalation passed on to the next target.
func (m *Metrics) EscalationEscalated() {
	if m == nil {
		return
	}
	m.escLevel.Inc()
}

// BroadcastPeople counts n broadcast people entering state.
func (m *Metrics) BroadcastPeople(state string, n int) {
	if m == nil || n <= 0 {
		return
	}
	m.people.WithLabelValues(bounded(state)).Add(float64(n))
}

// SenderWait counts a send its sender's pacing held back.
func (m *Metrics) SenderWait(channel, reason string) {
	if m == nil {
		return
	}
	m.senderWaits.WithLabelValues(bounded(channel), bounded(reason)).Inc()
}

// descName finds a Desc's fully-qualified name in its String form (Desc
// has no accessor for it).
var descName = regexp.MustCompile(`fqName: "([^"]+)"`)

// Names lists the metric families the registry describes or exposes,
// sorted: what a dashboard may query (a histogram's series add _bucket,
// _sum and _count). Collectors registered later (Register) are included.
func (m *Metrics) Names() []string {
	ch := make(chan *prometheus.Desc)
	go func() {
		m.reg.Describe(ch)
		close(ch)
	}()
	set := map[string]bool{}
	for d := range ch {
		if sub := descName.FindStringSubmatch(d.String()); sub != nil {
			set[sub[1]] = true
		}
	}
	mfs, _ := m.reg.Gather()
	for _, mf := range mfs {
		set[mf.GetName()] = true
	}
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
