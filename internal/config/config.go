// Package config holds the gateway's settings: one Config struct, one table
// of the environment variables that set it (settings.go: name, default,
// documentation, parser and check of each), one loader (environment
// variables, optionally seeded from a KEY=VALUE file), and one Validate
// that fails fast at start-up with a message naming every bad setting.
// docs/configuration.md and `gateway --help` are made from the table.
package config

import (
	"bufio"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Config is everything the API and the workers need.
type Config struct {
	// Addr is where the HTTP API listens (GATEWAY_ADDR).
	Addr string
	// OpsAddr is the internal operations listener: /metrics, /healthz,
	// /readyz and the queue dashboard (GATEWAY_OPS_ADDR, formerly
	// GATEWAY_HEALTH_ADDR); empty turns it off.
	OpsAddr string
	// opsAddrSet says a variable set OpsAddr (its default does not apply).
	opsAddrSet bool
	// OpsUsers maps an operator's name to the bcrypt hash of their
	// password, for the queue dashboard (GATEWAY_OPS_USERS); empty: the
	// dashboard is not served.
	OpsUsers map[string]string
	// OpsReadOnly keeps the queue dashboard's users from acting on the
	// queues (GATEWAY_OPS_READ_ONLY).
	OpsReadOnly bool
	// PublicURL is the base URL providers use to call back (GATEWAY_PUBLIC_URL),
	// without a trailing slash. Callback URLs are built from it and webhook
	// signatures are checked against it.
	PublicURL string
	// APIKeys maps an API key to its tenant (GATEWAY_API_KEYS "tenant:key,…").
	APIKeys map[string]string
	// RedisURL is the Redis to use (REDIS_URL). In cluster mode it names the
	// seed nodes ("redis://a:6379?addr=b:6379&addr=c:6379"); with Sentinel it
	// gives the password and database of the monitored primary.
	RedisURL string
	// RedisCluster selects Redis Cluster (REDIS_CLUSTER=true).
	RedisCluster bool
	// RedisSentinelMaster and RedisSentinelAddrs select Redis Sentinel
	// (REDIS_SENTINEL_MASTER, REDIS_SENTINEL_ADDRS "host:port,host:port").
	RedisSentinelMaster string
	RedisSentinelAddrs  []string
	// Replication says when a write counts as done (see ReplicationConfig).
	Replication ReplicationConfig
	// Retention is how long message records stay queryable (GATEWAY_RETENTION).
	Retention time.Duration
	// IdempotencyTTL is how long an Idempotency-Key is remembered
	// (GATEWAY_IDEMPOTENCY_TTL).
	IdempotencyTTL time.Duration
	// MaxRequestBytes caps an API request body (GATEWAY_MAX_REQUEST_BYTES).
	MaxRequestBytes int
	// MaxUploadBytes caps an uploaded audience CSV (GATEWAY_MAX_UPLOAD_BYTES).
	MaxUploadBytes int
	// DefaultRegion is the region (ISO 3166 code, e.g. US or CN) of phone
	// numbers without a country code in uploaded CSVs
	// (GATEWAY_DEFAULT_REGION); empty requires +country codes.
	DefaultRegion string
	// ShutdownTimeout bounds a graceful stop (GATEWAY_SHUTDOWN_TIMEOUT).
	ShutdownTimeout time.Duration
	// LogLevel is debug, info, warn or error (LOG_LEVEL).
	LogLevel string
	// LogFormat is json or text (LOG_FORMAT).
	LogFormat string
	// Tracing is OpenTelemetry tracing, off unless it has an endpoint.
	Tracing TracingConfig

	Worker WorkerConfig
	Twilio TwilioConfig
	Voice  VoiceConfig
	WeChat WeChatConfig
	Email  EmailConfig

	// WebhookAttempts is how often an event is offered to a clinic's
	// endpoint before it is dead-lettered (GATEWAY_WEBHOOK_ATTEMPTS).
	WebhookAttempts int
	// WebhookAllowNetworks are networks that tenants' webhook endpoints and
	// callback_urls may reach although they are not public
	// (GATEWAY_WEBHOOK_ALLOW_NETWORKS, CIDR prefixes or single addresses
	// separated by commas, e.g. "10.20.0.0/16,192.168.5.7/32"). Empty by
	// default: only public addresses; loopback, link-local (cloud metadata),
	// private, CGNAT and other special ranges are refused when connecting.
	WebhookAllowNetworks []netip.Prefix

	// CrisisOptOutExempt lists tenants whose crisis messages are sent even to
	// recipients who opted out (GATEWAY_CRISIS_OPTOUT_EXEMPT, tenant names
	// separated by commas; empty by default). Every such send is noted in
	// the message's history.
	CrisisOptOutExempt []string

	// Senders are the per-sender rate limits (see SenderLimits).
	Senders SenderLimits
	// Admission keeps one tenant from filling the queues and Redis for
	// every tenant (see AdmissionConfig).
	Admission AdmissionConfig
	// Quiet is the quiet-hours default of every tenant (see QuietConfig).
	Quiet QuietConfig
	// Templates configures template rendering (see TemplateConfig).
	Templates TemplateConfig
	// Prices estimate a broadcast's cost in its preview (PRICE_CURRENCY,
	// PRICE_SMS_SEGMENT, PRICE_VOICE_MINUTE, PRICE_WECHAT_MESSAGE,
	// PRICE_EMAIL_MESSAGE); the defaults are Twilio's US list prices.
	Prices Prices
	// MinAckTimeout is the shortest ack_timeout a broadcast may ask for
	// before its next channel is tried (BROADCAST_MIN_ACK_TIMEOUT).
	MinAckTimeout time.Duration

	// BlobURL is the blob store for call recordings (BLOB_URL): file:// or s3://.
	BlobURL string
	// HotRetention is how long a final message stays in Redis before the
	// workers move it to the blob store (GATEWAY_HOT_RETENTION); 0 keeps
	// every message in Redis.
	HotRetention time.Duration
	// RecordingRetention is how long call recordings are kept
	// (RECORDING_RETENTION, default GATEWAY_RETENTION; never longer).
	RecordingRetention time.Duration
	// RecordingKeys encrypt recordings at rest (RECORDING_KEYS; "": not
	// encrypted).
	RecordingKeys string

	// Audit is the audit log's signing key and export (see AuditConfig).
	Audit AuditConfig
}

// VoiceConfig is the voice channel: calls through the Twilio account.
type VoiceConfig struct {
	// From is the calling number (TWILIO_VOICE_FROM); setting it turns the
	// voice channel on (it needs the blob store for recordings).
	From string
	// CallsPerSecond limits call creation per from-number across all
	// workers (VOICE_CALLS_PER_SECOND).
	CallsPerSecond float64
	// MaxCalls is how many calls a message gets when the line is busy or
	// nobody answers (VOICE_MAX_CALLS), RedialDelay the wait between them
	// (VOICE_REDIAL_DELAY).
	MaxCalls    int
	RedialDelay time.Duration
}

// SenderLimits are the rates each sender may send at, enforced across all
// worker processes, and its daily quota (0: none). Providers filter or
// refuse senders that go faster: a US long code takes 1 SMS segment/s, a
// toll-free number 3, a short code 100; voice 1 call/s; a WeChat account
// about 100,000 template messages a day.
type SenderLimits struct {
	SMSPerSecond    float64 // SMS_SEGMENTS_PER_SECOND (segments, not messages)
	SMSPerDay       int64   // SMS_DAILY_LIMIT (segments)
	WeChatPerSecond float64 // WECHAT_MESSAGES_PER_SECOND
	WeChatPerDay    int64   // WECHAT_DAILY_LIMIT (resets at midnight China time)
	EmailPerSecond  float64 // EMAIL_MESSAGES_PER_SECOND
	EmailPerDay     int64   // EMAIL_DAILY_LIMIT
	// Recovery is how long a sender slowed by the provider (429, Twilio
	// 20429/30001, WeChat 45009) takes to climb back to its configured rate
	// (SENDER_RECOVERY).
	Recovery time.Duration
}

// QuietConfig is the default quiet window of tenants; each tenant can set
// its own (PUT /v1/settings).
type QuietConfig struct {
	// Window is QUIET_HOURS ("21:00-08:00", or "off").
	Window string
	// Crisis is QUIET_HOURS_CRISIS: "send" (crisis passes) or "defer".
	Crisis string
	// TimeZone is GATEWAY_DEFAULT_TIMEZONE: the recipients' zone when
	// neither their contact, the request nor their phone number tells.
	TimeZone string
}

// Prices are what the providers charge, for estimates only.
type Prices struct {
	Currency                                      string
	SMSSegment, VoiceMinute, WeChatMessage, Email float64
}

// TemplateConfig configures template rendering.
type TemplateConfig struct {
	// DefaultLocale ends every locale fallback chain (TEMPLATE_DEFAULT_LOCALE).
	DefaultLocale string
	// Fallbacks adds steps to the chain (TEMPLATE_LOCALE_FALLBACKS,
	// "zh-HK=zh-TW;zh-MO=zh-HK"); a locale always falls back to its base
	// language, then to DefaultLocale.
	Fallbacks string
}

// WeChatConfig is a WeChat official account.
type WeChatConfig struct {
	AppID          string // WECHAT_APP_ID
	AppSecret      string // WECHAT_APP_SECRET
	Token          string // WECHAT_TOKEN (verifies inbound pushes)
	EncodingAESKey string // WECHAT_ENCODING_AES_KEY (safe mode)
	APIURL         string // WECHAT_API_URL
}

// Enabled reports whether WeChat is configured.
func (w WeChatConfig) Enabled() bool { return w.AppID != "" || w.AppSecret != "" }

// EmailConfig is the SMTP relay.
type EmailConfig struct {
	SMTPURL  string // SMTP_URL
	From     string // EMAIL_FROM
	PoolSize int    // SMTP_POOL_SIZE
	// ReturnDomain is the domain of each message's return path and
	// Reply-To (EMAIL_RETURN_DOMAIN); ReturnSecret signs them and the
	// one-click unsubscribe links (EMAIL_RETURN_SECRET).
	ReturnDomain, ReturnSecret string
	// InboundAddr is where the API process takes mail for the return
	// domain (EMAIL_INBOUND_ADDR, "" off), at most InboundMaxBytes a mail
	// (EMAIL_INBOUND_MAX_BYTES) and InboundPerMinute mails a minute from
	// one client IP (EMAIL_INBOUND_RATE).
	InboundAddr      string
	InboundMaxBytes  int
	InboundPerMinute int
	// DSN asks the relay for delivery status notifications, success ones
	// too, to the return path (EMAIL_DSN, on by default).
	DSN bool
	// WebhookSecret signs a relay's POST /webhooks/email/events
	// (EMAIL_WEBHOOK_SECRET, "" no such route).
	WebhookSecret string
}

// Enabled reports whether email is configured.
func (e EmailConfig) Enabled() bool { return e.SMTPURL != "" || e.From != "" }

// TracingConfig is OpenTelemetry tracing (see docs/operations.md#tracing).
type TracingConfig struct {
	// Endpoint is the OTLP HTTP collector's base URL
	// (OTEL_EXPORTER_OTLP_ENDPOINT); empty: no tracing, and no spans.
	Endpoint string
	// ServiceName names the gateway's spans (OTEL_SERVICE_NAME).
	ServiceName string
}

// WorkerConfig tunes delivery.
type WorkerConfig struct {
	// Concurrency is the number of sends in flight for high, normal and bulk
	// traffic, shared 6:3:1 under contention (WORKER_CONCURRENCY).
	Concurrency int
	// CrisisConcurrency is a pool reserved for crisis traffic, so it never
	// waits behind other priorities (WORKER_CRISIS_CONCURRENCY).
	CrisisConcurrency int
	// ReplyConcurrency is the pool that files patients' answers
	// (WORKER_REPLY_CONCURRENCY).
	ReplyConcurrency int
	// MaxAttempts is the most provider attempts per message (DELIVERY_MAX_ATTEMPTS).
	MaxAttempts int
	// ProviderTimeout is the HTTP timeout of one provider call (PROVIDER_TIMEOUT).
	ProviderTimeout time.Duration
	// UnconfirmedGrace is how long a retry waits for the provider's callback
	// before resending after an attempt whose outcome is unknown (a timeout
	// or a crash mid-call) (DELIVERY_UNCONFIRMED_GRACE).
	UnconfirmedGrace time.Duration
	// ReportWait is how long an SMS or a call may wait at sent for the provider's
	// final status callback before the workers ask the provider
	// (DELIVERY_REPORT_WAIT).
	ReportWait time.Duration
	// PollInterval is how often idle workers look for new tasks
	// (WORKER_POLL_INTERVAL); DelayedPollInterval how often scheduled and
	// retried tasks are moved to their queue (WORKER_DELAYED_POLL_INTERVAL).
	PollInterval        time.Duration
	DelayedPollInterval time.Duration
}

// TwilioConfig is the Twilio account used for SMS.
type TwilioConfig struct {
	AccountSID          string // TWILIO_ACCOUNT_SID
	AuthToken           string // TWILIO_AUTH_TOKEN
	From                string // TWILIO_FROM, E.164
	MessagingServiceSID string // TWILIO_MESSAGING_SERVICE_SID, used instead of From when set
	APIURL              string // TWILIO_API_URL
}

// Enabled reports whether any Twilio setting was given.
func (t TwilioConfig) Enabled() bool {
	return t.AccountSID != "" || t.AuthToken != "" || t.From != "" || t.MessagingServiceSID != ""
}

// NewDefaultConfig returns the defaults every setting falls back to: the
// Default of each setting in the table (Settings), parsed as a set value
// would be, and for the few whose default is not a fixed value (BLOB_URL,
// RECORDING_RETENTION) the value their DefaultDoc describes.
func NewDefaultConfig() Config {
	var c Config
	for _, s := range settings {
		switch {
		case s.Default != "":
			if err := s.parse(&c, s.Default); err != nil {
				panic(fmt.Sprintf("config: the default of %s does not parse: %v", s.Name, err))
			}
		case s.fallback != nil:
			s.fallback(&c)
		}
	}
	return c
}

// defaultBlobURL is data/blobs under the working directory.
func defaultBlobURL() string {
	wd, err := os.Getwd()
	if err != nil {
		wd = os.TempDir()
	}
	return "file://" + filepath.ToSlash(wd) + "/data/blobs?create_dir=true&no_tmp_dir=true"
}

// Load reads the environment (through getenv, os.Getenv when nil) over the
// defaults. When GATEWAY_CONFIG_FILE names a file of KEY=VALUE lines, its
// values apply where the environment does not set the variable. A value
// that does not parse is named in the returned *Error.
func Load(getenv func(string) string) (Config, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	if path := getenv("GATEWAY_CONFIG_FILE"); path != "" {
		file, err := readEnvFile(path)
		if err != nil {
			return Config{}, &Error{Problems: []error{fmt.Errorf("GATEWAY_CONFIG_FILE: %w", err)}}
		}
		env := getenv
		getenv = func(k string) string {
			if v := env(k); v != "" {
				return v
			}
			return file[k]
		}
	}
	c := NewDefaultConfig()
	var errs []error
	for _, s := range settings {
		if s.parse == nil {
			continue
		}
		v := strings.TrimSpace(getenv(s.Name))
		if v == "" {
			if s.fallback != nil {
				s.fallback(&c) // after the settings it derives from: they come first in the table
			}
			continue
		}
		if err := s.parse(&c, v); err != nil {
			if s.Secret || s.namesEntry {
				errs = append(errs, fmt.Errorf("%s: %w", s.Name, err))
			} else {
				errs = append(errs, fmt.Errorf("%s=%q: %w", s.Name, v, err))
			}
		}
	}
	return c, invalid(errs)
}

// Error is a configuration that is not valid. Load and Validate return
// one naming every bad setting; a process that gets one stops with exit
// status 2.
type Error struct {
	// Problems are the bad settings, one error each.
	Problems []error
}

// Error lists the problems, one a line.
func (e *Error) Error() string { return errors.Join(e.Problems...).Error() }

// Unwrap returns the problems.
func (e *Error) Unwrap() []error { return e.Problems }

// invalid is nil without problems, an *Error otherwise.
func invalid(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	return &Error{Problems: errs}
}

// parseAPIKeys parses "tenant:key,tenant:key". A key may appear once only.
func parseAPIKeys(v string) (map[string]string, error) {
	keys := map[string]string{}
	for i, pair := range strings.Split(v, ",") {
		pair = strings.TrimSpace(pair)
		if pair == "" {
			continue
		}
		tenant, key, ok := strings.Cut(pair, ":")
		tenant, key = strings.TrimSpace(tenant), strings.TrimSpace(key)
		switch {
		case !ok || tenant == "" || key == "":
			return nil, fmt.Errorf("entry %d is not of the form tenant:key", i+1)
		case !validTenant(tenant):
			return nil, fmt.Errorf("entry %d: tenant %q may use only letters, digits, '-' and '_' (at most 64)", i+1, tenant)
		case len(key) < 16:
			return nil, fmt.Errorf("entry %d (tenant %q): key is shorter than 16 characters", i+1, tenant)
		}
		if _, dup := keys[key]; dup {
			return nil, fmt.Errorf("entry %d: the same key is given twice", i+1)
		}
		keys[key] = tenant
	}
	return keys, nil
}

func validTenant(s string) bool {
	if len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// parseDuration accepts Go durations plus a whole number of days ("30d").
func parseDuration(v string) (time.Duration, error) {
	if d, ok := strings.CutSuffix(v, "d"); ok {
		n, err := strconv.Atoi(d)
		if err != nil {
			return 0, err
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	return time.ParseDuration(v)
}

// Role says which parts of the gateway a process runs; each needs its settings.
type Role int

// Roles.
const (
	RoleAPI Role = 1 << iota
	RoleWorker
	RoleAll = RoleAPI | RoleWorker
)

// Validate checks the settings a process of the given role needs, also
// those set in code, and returns an *Error naming every bad one.
func (c Config) Validate(role Role) error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	for _, s := range settings {
		if s.check != nil {
			s.check(c, role, bad)
		}
	}
	if !c.Twilio.Enabled() && !c.WeChat.Enabled() && !c.Email.Enabled() {
		bad("no channel is configured: set the Twilio settings (TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_FROM), WECHAT_APP_ID and WECHAT_APP_SECRET, or SMTP_URL and EMAIL_FROM")
	}
	return invalid(errs)
}

func readEnvFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	vals := map[string]string{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%s:%d: want KEY=VALUE", path, n)
		}
		vals[strings.TrimSpace(k)] = strings.Trim(strings.TrimSpace(v), `"'`)
	}
	return vals, sc.Err()
}
