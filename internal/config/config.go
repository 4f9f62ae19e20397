// Package config holds the gateway's settings: one Config struct with
// documented defaults, one loader (environment variables, optionally seeded
// from a KEY=VALUE file), and one Validate that fails fast at start-up with
// a message naming the bad setting.
package config

import (
	"bufio"
	"errors"
	"fmt"
	"net/mail"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nyaruka/phonenumbers"
	"golang.org/x/text/language"

	"github.com/patientmsg/gateway/internal/egress"
	"github.com/patientmsg/gateway/internal/schedule"
)

// Config is everything the API and the workers need.
type Config struct {
	// Addr is where the HTTP API listens (GATEWAY_ADDR).
	Addr string
	// HealthAddr is where a worker-only process answers /healthz and
	// /readyz (GATEWAY_HEALTH_ADDR); empty turns it off.
	HealthAddr string
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
	// RecordingRetention is how long call recordings are kept
	// (RECORDING_RETENTION, default GATEWAY_RETENTION; never longer).
	RecordingRetention time.Duration
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
}

// Enabled reports whether email is configured.
func (e EmailConfig) Enabled() bool { return e.SMTPURL != "" || e.From != "" }

// WorkerConfig tunes delivery.
type WorkerConfig struct {
	// Concurrency is the number of sends in flight for high, normal and bulk
	// traffic, shared 6:3:1 under contention (WORKER_CONCURRENCY).
	Concurrency int
	// CrisisConcurrency is a pool reserved for crisis traffic, so it never
	// waits behind other priorities (WORKER_CRISIS_CONCURRENCY).
	CrisisConcurrency int
	// MaxAttempts is the most provider attempts per message (DELIVERY_MAX_ATTEMPTS).
	MaxAttempts int
	// ProviderTimeout is the HTTP timeout of one provider call (PROVIDER_TIMEOUT).
	ProviderTimeout time.Duration
	// UnconfirmedGrace is how long a retry waits for the provider's callback
	// before resending after an attempt whose outcome is unknown (a timeout
	// or a crash mid-call) (DELIVERY_UNCONFIRMED_GRACE).
	UnconfirmedGrace time.Duration
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

// NewDefaultConfig returns the defaults every setting falls back to.
func NewDefaultConfig() Config {
	return Config{
		Addr:            ":8080",
		HealthAddr:      ":8081",
		RedisURL:        "redis://127.0.0.1:6379/0",
		Replication:     defaultReplication(),
		Retention:       30 * 24 * time.Hour,
		IdempotencyTTL:  24 * time.Hour,
		MaxRequestBytes: 64 << 10,
		MaxUploadBytes:  20 << 20,
		ShutdownTimeout: 25 * time.Second,
		LogLevel:        "info",
		LogFormat:       "json",
		Worker: WorkerConfig{
			Concurrency:         20,
			CrisisConcurrency:   10,
			MaxAttempts:         8,
			ProviderTimeout:     10 * time.Second,
			UnconfirmedGrace:    time.Minute,
			PollInterval:        100 * time.Millisecond,
			DelayedPollInterval: time.Second,
		},
		Twilio:             TwilioConfig{APIURL: "https://api.twilio.com"},
		Voice:              VoiceConfig{CallsPerSecond: 1, MaxCalls: 3, RedialDelay: 30 * time.Minute},
		WeChat:             WeChatConfig{APIURL: "https://api.weixin.qq.com"},
		Email:              EmailConfig{PoolSize: 4},
		RecordingRetention: 30 * 24 * time.Hour,
		BlobURL:            defaultBlobURL(),
		WebhookAttempts:    10,
		Senders: SenderLimits{SMSPerSecond: 1, WeChatPerSecond: 20, WeChatPerDay: 100000, EmailPerSecond: 5,
			Recovery: time.Minute},
		Admission: AdmissionConfig{TenantRate: RateLimit{PerSecond: 100, Burst: 200}, BacklogHours: 4,
			MemoryGuard: MemoryGuard{Bulk: 0.80, Routine: 0.90, Urgent: 0.97}},
		Quiet:         QuietConfig{Window: "21:00-08:00", Crisis: "send", TimeZone: "UTC"},
		Templates:     TemplateConfig{DefaultLocale: "en"},
		MinAckTimeout: time.Minute,
		Prices:        Prices{Currency: "USD", SMSSegment: 0.0083, VoiceMinute: 0.014},
	}
}

// defaultBlobURL is data/blobs under the working directory.
func defaultBlobURL() string {
	wd, err := os.Getwd()
	if err != nil {
		wd = os.TempDir()
	}
	return "file://" + filepath.ToSlash(wd) + "/data/blobs?create_dir=true&no_tmp_dir=true"
}

// Vars lists every environment variable the loader reads, for --help and docs.
var Vars = []string{
	"GATEWAY_CONFIG_FILE", "GATEWAY_ADDR", "GATEWAY_HEALTH_ADDR", "GATEWAY_PUBLIC_URL", "GATEWAY_API_KEYS", "REDIS_URL",
	"REDIS_CLUSTER", "REDIS_SENTINEL_MASTER", "REDIS_SENTINEL_ADDRS", "REDIS_MIN_REPLICAS_ACK", "REDIS_REPLICA_ACK_TIMEOUT",
	"GATEWAY_RETENTION", "GATEWAY_IDEMPOTENCY_TTL", "GATEWAY_MAX_REQUEST_BYTES", "GATEWAY_MAX_UPLOAD_BYTES", "GATEWAY_DEFAULT_REGION", "GATEWAY_SHUTDOWN_TIMEOUT",
	"LOG_LEVEL", "LOG_FORMAT",
	"WORKER_CONCURRENCY", "WORKER_CRISIS_CONCURRENCY", "DELIVERY_MAX_ATTEMPTS", "PROVIDER_TIMEOUT",
	"DELIVERY_UNCONFIRMED_GRACE", "WORKER_POLL_INTERVAL", "WORKER_DELAYED_POLL_INTERVAL",
	"TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_FROM", "TWILIO_MESSAGING_SERVICE_SID", "TWILIO_API_URL",
	"TWILIO_VOICE_FROM", "VOICE_CALLS_PER_SECOND", "VOICE_MAX_CALLS", "VOICE_REDIAL_DELAY",
	"WECHAT_APP_ID", "WECHAT_APP_SECRET", "WECHAT_TOKEN", "WECHAT_ENCODING_AES_KEY", "WECHAT_API_URL",
	"SMTP_URL", "EMAIL_FROM", "SMTP_POOL_SIZE",
	"BLOB_URL", "RECORDING_RETENTION", "GATEWAY_CRISIS_OPTOUT_EXEMPT", "GATEWAY_WEBHOOK_ATTEMPTS", "GATEWAY_WEBHOOK_ALLOW_NETWORKS",
	"SMS_SEGMENTS_PER_SECOND", "SMS_DAILY_LIMIT", "WECHAT_MESSAGES_PER_SECOND", "WECHAT_DAILY_LIMIT",
	"EMAIL_MESSAGES_PER_SECOND", "EMAIL_DAILY_LIMIT", "SENDER_RECOVERY",
	"GATEWAY_TENANT_RATE_LIMIT", "GATEWAY_TENANT_RATE_LIMITS", "GATEWAY_TENANT_BACKLOG_HOURS", "GATEWAY_REDIS_MEMORY_GUARD",
	"QUIET_HOURS", "QUIET_HOURS_CRISIS", "GATEWAY_DEFAULT_TIMEZONE", "TEMPLATE_DEFAULT_LOCALE", "TEMPLATE_LOCALE_FALLBACKS", "BROADCAST_MIN_ACK_TIMEOUT",
	"PRICE_CURRENCY", "PRICE_SMS_SEGMENT", "PRICE_VOICE_MINUTE", "PRICE_WECHAT_MESSAGE", "PRICE_EMAIL_MESSAGE",
}

// Load reads the environment (through getenv, os.Getenv when nil) over the
// defaults. When GATEWAY_CONFIG_FILE names a file of KEY=VALUE lines, its
// values apply where the environment does not set the variable.
func Load(getenv func(string) string) (Config, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	if path := getenv("GATEWAY_CONFIG_FILE"); path != "" {
		file, err := readEnvFile(path)
		if err != nil {
			return Config{}, fmt.Errorf("GATEWAY_CONFIG_FILE: %w", err)
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
	str := func(name string, dst *string) {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			*dst = v
		}
	}
	dur := func(name string, dst *time.Duration) {
		v := strings.TrimSpace(getenv(name))
		if v == "" {
			return
		}
		d, err := parseDuration(v)
		if err != nil || d <= 0 {
			errs = append(errs, fmt.Errorf("%s=%q: want a positive duration such as 30s, 10m, 720h or 30d", name, v))
			return
		}
		*dst = d
	}
	num := func(name string, dst *int) {
		v := strings.TrimSpace(getenv(name))
		if v == "" {
			return
		}
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			errs = append(errs, fmt.Errorf("%s=%q: want a positive whole number", name, v))
			return
		}
		*dst = n
	}
	str("GATEWAY_ADDR", &c.Addr)
	if v, ok := lookup(getenv, "GATEWAY_HEALTH_ADDR"); ok {
		c.HealthAddr = v // "off" or empty disables it
		if v == "off" {
			c.HealthAddr = ""
		}
	}
	str("GATEWAY_PUBLIC_URL", &c.PublicURL)
	c.PublicURL = strings.TrimRight(c.PublicURL, "/")
	str("REDIS_URL", &c.RedisURL)
	switch v := strings.ToLower(strings.TrimSpace(getenv("REDIS_CLUSTER"))); v {
	case "", "false", "0", "no":
	case "true", "1", "yes":
		c.RedisCluster = true
	default:
		errs = append(errs, fmt.Errorf("REDIS_CLUSTER=%q: want true or false", v))
	}
	str("REDIS_SENTINEL_MASTER", &c.RedisSentinelMaster)
	for _, a := range strings.Split(getenv("REDIS_SENTINEL_ADDRS"), ",") {
		if a = strings.TrimSpace(a); a != "" {
			c.RedisSentinelAddrs = append(c.RedisSentinelAddrs, a)
		}
	}
	errs = append(errs, loadReplication(getenv, &c.Replication)...)
	dur("GATEWAY_RETENTION", &c.Retention)
	dur("GATEWAY_IDEMPOTENCY_TTL", &c.IdempotencyTTL)
	num("GATEWAY_MAX_REQUEST_BYTES", &c.MaxRequestBytes)
	num("GATEWAY_MAX_UPLOAD_BYTES", &c.MaxUploadBytes)
	str("GATEWAY_DEFAULT_REGION", &c.DefaultRegion)
	c.DefaultRegion = strings.ToUpper(c.DefaultRegion)
	dur("GATEWAY_SHUTDOWN_TIMEOUT", &c.ShutdownTimeout)
	str("LOG_LEVEL", &c.LogLevel)
	str("LOG_FORMAT", &c.LogFormat)
	num("WORKER_CONCURRENCY", &c.Worker.Concurrency)
	num("WORKER_CRISIS_CONCURRENCY", &c.Worker.CrisisConcurrency)
	num("DELIVERY_MAX_ATTEMPTS", &c.Worker.MaxAttempts)
	dur("PROVIDER_TIMEOUT", &c.Worker.ProviderTimeout)
	dur("DELIVERY_UNCONFIRMED_GRACE", &c.Worker.UnconfirmedGrace)
	dur("WORKER_POLL_INTERVAL", &c.Worker.PollInterval)
	dur("WORKER_DELAYED_POLL_INTERVAL", &c.Worker.DelayedPollInterval)
	str("TWILIO_ACCOUNT_SID", &c.Twilio.AccountSID)
	str("TWILIO_AUTH_TOKEN", &c.Twilio.AuthToken)
	str("TWILIO_FROM", &c.Twilio.From)
	str("TWILIO_MESSAGING_SERVICE_SID", &c.Twilio.MessagingServiceSID)
	str("TWILIO_API_URL", &c.Twilio.APIURL)
	c.Twilio.APIURL = strings.TrimRight(c.Twilio.APIURL, "/")
	str("TWILIO_VOICE_FROM", &c.Voice.From)
	rate := func(name string, dst *float64, most float64) {
		v := strings.TrimSpace(getenv(name))
		if v == "" {
			return
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f <= 0 || f > most {
			errs = append(errs, fmt.Errorf("%s=%q: want a number above 0, at most %g (e.g. 1 or 0.5)", name, v, most))
			return
		}
		*dst = f
	}
	daily := func(name string, dst *int64) {
		v := strings.TrimSpace(getenv(name))
		if v == "" {
			return
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			errs = append(errs, fmt.Errorf("%s=%q: want a whole number, 0 for no daily limit", name, v))
			return
		}
		*dst = n
	}
	rate("VOICE_CALLS_PER_SECOND", &c.Voice.CallsPerSecond, 100)
	rate("SMS_SEGMENTS_PER_SECOND", &c.Senders.SMSPerSecond, 10000)
	daily("SMS_DAILY_LIMIT", &c.Senders.SMSPerDay)
	rate("WECHAT_MESSAGES_PER_SECOND", &c.Senders.WeChatPerSecond, 10000)
	daily("WECHAT_DAILY_LIMIT", &c.Senders.WeChatPerDay)
	rate("EMAIL_MESSAGES_PER_SECOND", &c.Senders.EmailPerSecond, 10000)
	daily("EMAIL_DAILY_LIMIT", &c.Senders.EmailPerDay)
	dur("SENDER_RECOVERY", &c.Senders.Recovery)
	errs = append(errs, loadAdmission(getenv, &c.Admission)...)
	str("QUIET_HOURS", &c.Quiet.Window)
	str("QUIET_HOURS_CRISIS", &c.Quiet.Crisis)
	str("GATEWAY_DEFAULT_TIMEZONE", &c.Quiet.TimeZone)
	str("TEMPLATE_DEFAULT_LOCALE", &c.Templates.DefaultLocale)
	str("TEMPLATE_LOCALE_FALLBACKS", &c.Templates.Fallbacks)
	dur("BROADCAST_MIN_ACK_TIMEOUT", &c.MinAckTimeout)
	str("PRICE_CURRENCY", &c.Prices.Currency)
	price := func(name string, dst *float64) {
		v := strings.TrimSpace(getenv(name))
		if v == "" {
			return
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 || f > 100 {
			errs = append(errs, fmt.Errorf("%s=%q: want a price such as 0.0083", name, v))
			return
		}
		*dst = f
	}
	price("PRICE_SMS_SEGMENT", &c.Prices.SMSSegment)
	price("PRICE_VOICE_MINUTE", &c.Prices.VoiceMinute)
	price("PRICE_WECHAT_MESSAGE", &c.Prices.WeChatMessage)
	price("PRICE_EMAIL_MESSAGE", &c.Prices.Email)
	num("VOICE_MAX_CALLS", &c.Voice.MaxCalls)
	dur("VOICE_REDIAL_DELAY", &c.Voice.RedialDelay)
	str("WECHAT_APP_ID", &c.WeChat.AppID)
	str("WECHAT_APP_SECRET", &c.WeChat.AppSecret)
	str("WECHAT_TOKEN", &c.WeChat.Token)
	str("WECHAT_ENCODING_AES_KEY", &c.WeChat.EncodingAESKey)
	str("WECHAT_API_URL", &c.WeChat.APIURL)
	c.WeChat.APIURL = strings.TrimRight(c.WeChat.APIURL, "/")
	str("SMTP_URL", &c.Email.SMTPURL)
	str("EMAIL_FROM", &c.Email.From)
	num("SMTP_POOL_SIZE", &c.Email.PoolSize)
	str("BLOB_URL", &c.BlobURL)
	num("GATEWAY_WEBHOOK_ATTEMPTS", &c.WebhookAttempts)
	if v := strings.TrimSpace(getenv("GATEWAY_WEBHOOK_ALLOW_NETWORKS")); v != "" {
		nets, err := egress.ParseNetworks(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("GATEWAY_WEBHOOK_ALLOW_NETWORKS: %w (e.g. 10.20.0.0/16,192.168.5.7/32)", err))
		}
		c.WebhookAllowNetworks = nets
	}
	for _, t := range strings.Split(getenv("GATEWAY_CRISIS_OPTOUT_EXEMPT"), ",") {
		if t = strings.TrimSpace(t); t != "" {
			c.CrisisOptOutExempt = append(c.CrisisOptOutExempt, t)
		}
	}
	c.RecordingRetention = c.Retention // unless set: as long as the messages
	dur("RECORDING_RETENTION", &c.RecordingRetention)
	if v := strings.TrimSpace(getenv("GATEWAY_API_KEYS")); v != "" {
		keys, err := ParseAPIKeys(v)
		if err != nil {
			errs = append(errs, err)
		}
		c.APIKeys = keys
	}
	return c, errors.Join(errs...)
}

func lookup(getenv func(string) string, name string) (string, bool) {
	v := strings.TrimSpace(getenv(name))
	return v, v != ""
}

// ParseAPIKeys parses "tenant:key,tenant:key". A key may appear once only.
func ParseAPIKeys(v string) (map[string]string, error) {
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
			return nil, fmt.Errorf("GATEWAY_API_KEYS: entry %d is not of the form tenant:key", i+1)
		case !validTenant(tenant):
			return nil, fmt.Errorf("GATEWAY_API_KEYS: entry %d: tenant %q may use only letters, digits, '-' and '_' (at most 64)", i+1, tenant)
		case len(key) < 16:
			return nil, fmt.Errorf("GATEWAY_API_KEYS: entry %d (tenant %q): key is shorter than 16 characters", i+1, tenant)
		}
		if _, dup := keys[key]; dup {
			return nil, fmt.Errorf("GATEWAY_API_KEYS: entry %d: the same key is given twice", i+1)
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

// Validate checks the settings a process of the given role needs and names
// every bad one.
func (c Config) Validate(role Role) error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if u, err := url.Parse(c.PublicURL); c.PublicURL == "" {
		bad("GATEWAY_PUBLIC_URL is required: the base URL providers call back, e.g. https://gateway.example-clinic.org")
	} else if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		bad("GATEWAY_PUBLIC_URL=%q: want an absolute http(s) URL with no path or query", c.PublicURL)
	}
	if _, err := parseRedisURL(c.RedisURL); err != nil {
		bad("REDIS_URL: %v", err) // the URL may hold a password: not echoed
	}
	switch {
	case c.RedisCluster && c.RedisSentinelMaster != "":
		bad("REDIS_CLUSTER and REDIS_SENTINEL_MASTER exclude each other")
	case c.RedisSentinelMaster != "" && len(c.RedisSentinelAddrs) == 0:
		bad("REDIS_SENTINEL_ADDRS is required with REDIS_SENTINEL_MASTER: the sentinels as host:port,host:port")
	case c.RedisSentinelMaster == "" && len(c.RedisSentinelAddrs) > 0:
		bad("REDIS_SENTINEL_ADDRS is set but REDIS_SENTINEL_MASTER (the monitored primary's name) is not")
	}
	errs = append(errs, c.Replication.validate()...)
	if role&RoleAPI != 0 {
		if c.Addr == "" {
			bad("GATEWAY_ADDR is empty")
		}
		if len(c.APIKeys) == 0 {
			bad("GATEWAY_API_KEYS is required: comma-separated tenant:key pairs, keys at least 16 characters")
		}
		if c.MaxRequestBytes < 4<<10 {
			bad("GATEWAY_MAX_REQUEST_BYTES=%d: must be at least 4096", c.MaxRequestBytes)
		}
		if c.MaxUploadBytes < c.MaxRequestBytes || c.MaxUploadBytes > 200<<20 {
			bad("GATEWAY_MAX_UPLOAD_BYTES=%d: must be at least GATEWAY_MAX_REQUEST_BYTES and at most 209715200 (200 MiB)", c.MaxUploadBytes)
		}
	}
	if c.Retention < time.Hour {
		bad("GATEWAY_RETENTION=%s: must be at least 1h", c.Retention)
	}
	if c.RecordingRetention > c.Retention {
		// A recording is reached through its message: kept longer, it could
		// no longer be read through the API, only leak.
		bad("RECORDING_RETENTION=%s: must not exceed GATEWAY_RETENTION (%s)", c.RecordingRetention, c.Retention)
	}
	if c.IdempotencyTTL > c.Retention {
		// A key that outlived its message could not return the original and
		// would let a retried request send the message again.
		bad("GATEWAY_IDEMPOTENCY_TTL=%s: must not exceed GATEWAY_RETENTION (%s)", c.IdempotencyTTL, c.Retention)
	}
	if err := egress.CheckNetworks(c.WebhookAllowNetworks); err != nil {
		bad("GATEWAY_WEBHOOK_ALLOW_NETWORKS: %v", err)
	}
	errs = append(errs, c.Admission.validate()...)
	if c.Worker.MaxAttempts > 50 {
		bad("DELIVERY_MAX_ATTEMPTS=%d: at most 50", c.Worker.MaxAttempts)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("LOG_LEVEL=%q: want debug, info, warn or error", c.LogLevel)
	}
	switch c.LogFormat {
	case "json", "text":
	default:
		bad("LOG_FORMAT=%q: want json or text", c.LogFormat)
	}
	if !c.Twilio.Enabled() && !c.WeChat.Enabled() && !c.Email.Enabled() {
		bad("no channel is configured: set the Twilio settings (TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_FROM), WECHAT_APP_ID and WECHAT_APP_SECRET, or SMTP_URL and EMAIL_FROM")
	}
	if c.WeChat.Enabled() {
		w := c.WeChat
		if w.AppID == "" || w.AppSecret == "" {
			bad("WECHAT_APP_ID and WECHAT_APP_SECRET are both required for WeChat")
		}
		if w.EncodingAESKey != "" && len(w.EncodingAESKey) != 43 {
			bad("WECHAT_ENCODING_AES_KEY: want the 43-character EncodingAESKey of the official account")
		}
		if u, err := url.Parse(w.APIURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("WECHAT_API_URL=%q: want an absolute http(s) URL", w.APIURL)
		}
	}
	if c.Email.Enabled() {
		if c.Email.SMTPURL == "" || c.Email.From == "" {
			bad("SMTP_URL and EMAIL_FROM are both required for email")
		} else if _, err := mail.ParseAddress(c.Email.From); err != nil {
			bad("EMAIL_FROM=%q: want an address such as \"Clinic <noreply@example-clinic.org>\"", c.Email.From)
		}
		if u, err := url.Parse(c.Email.SMTPURL); c.Email.SMTPURL != "" && (err != nil || u.Host == "") {
			bad("SMTP_URL: want smtp://user:password@host:587 or smtps://user:password@host:465")
		}
	}
	if c.Voice.From != "" && !c.Twilio.Enabled() {
		bad("TWILIO_VOICE_FROM needs the Twilio account settings (TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN)")
	}
	if v := c.Voice.From; v != "" {
		if n, err := phonenumbers.Parse(v, ""); err != nil || !phonenumbers.IsValidNumber(n) || phonenumbers.Format(n, phonenumbers.E164) != v {
			bad("TWILIO_VOICE_FROM=%q: want an E.164 number such as +14155550100", v)
		}
	}
	if c.Voice.MaxCalls > 10 {
		bad("VOICE_MAX_CALLS=%d: at most 10", c.Voice.MaxCalls)
	}
	if _, err := schedule.ParseWindow(c.Quiet.Window); err != nil {
		bad("QUIET_HOURS=%q: %v (e.g. 21:00-08:00, or off)", c.Quiet.Window, err)
	}
	if c.Quiet.Crisis != "send" && c.Quiet.Crisis != "defer" {
		bad("QUIET_HOURS_CRISIS=%q: want send (crisis messages pass quiet hours) or defer", c.Quiet.Crisis)
	}
	if _, err := schedule.LoadZone(c.Quiet.TimeZone); err != nil {
		bad("GATEWAY_DEFAULT_TIMEZONE=%q: want an IANA time zone such as Asia/Shanghai or America/New_York", c.Quiet.TimeZone)
	}
	if r := c.DefaultRegion; r != "" && phonenumbers.GetCountryCodeForRegion(r) == 0 {
		bad("GATEWAY_DEFAULT_REGION=%q: want a region code such as US or CN", r)
	}
	if _, err := language.Parse(c.Templates.DefaultLocale); err != nil {
		bad("TEMPLATE_DEFAULT_LOCALE=%q: want a language tag such as en or zh-CN", c.Templates.DefaultLocale)
	}
	if u, err := url.Parse(c.BlobURL); c.BlobURL == "" || err != nil || u.Scheme == "" {
		bad("BLOB_URL: want file:///absolute/path or s3://bucket?region=…")
	}
	if c.Twilio.Enabled() {
		t := c.Twilio
		if !strings.HasPrefix(t.AccountSID, "AC") || len(t.AccountSID) != 34 {
			bad("TWILIO_ACCOUNT_SID: want the 34-character account SID starting with AC")
		}
		if t.AuthToken == "" {
			bad("TWILIO_AUTH_TOKEN is required (it also verifies Twilio's webhook signatures)")
		}
		if t.From == "" && t.MessagingServiceSID == "" {
			bad("set TWILIO_FROM (an E.164 number) or TWILIO_MESSAGING_SERVICE_SID")
		}
		if t.From != "" {
			if n, err := phonenumbers.Parse(t.From, ""); err != nil || !phonenumbers.IsValidNumber(n) || phonenumbers.Format(n, phonenumbers.E164) != t.From {
				bad("TWILIO_FROM=%q: want an E.164 number such as +14155550100", t.From)
			}
		}
		if t.MessagingServiceSID != "" && (!strings.HasPrefix(t.MessagingServiceSID, "MG") || len(t.MessagingServiceSID) != 34) {
			bad("TWILIO_MESSAGING_SERVICE_SID: want the 34-character SID starting with MG")
		}
		if u, err := url.Parse(t.APIURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("TWILIO_API_URL=%q: want an absolute http(s) URL", t.APIURL)
		}
	}
	return errors.Join(errs...)
}

func parseRedisURL(v string) (*url.URL, error) {
	u, err := url.Parse(v)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix" {
		return nil, errors.New("want redis://, rediss:// or unix://")
	}
	return u, nil
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
