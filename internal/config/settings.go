package config

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nyaruka/phonenumbers"
	"github.com/redis/go-redis/v9"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/text/language"

	"github.com/patientmsg/gateway/channels/email"
	"github.com/patientmsg/gateway/internal/egress"
	"github.com/patientmsg/gateway/internal/recordings"
	"github.com/patientmsg/gateway/internal/returnpath"
	"github.com/patientmsg/gateway/internal/schedule"
	"github.com/patientmsg/gateway/templates"
)

// Setting is one environment variable of the gateway. The table of them
// (Settings) is the one place a setting is described: NewDefaultConfig
// takes its defaults from it, Load parses and Validate checks through it,
// `gateway --help` lists it, docs/configuration.md is generated from it
// (go tool task docs), and a test holds the deployment examples to it.
type Setting struct {
	// Name is the environment variable.
	Name string
	// Group is the section of docs/configuration.md that lists it.
	Group string
	// Default is the value the setting has when it is not set, written as
	// the variable would be ("30d"); "" when it has none, or when it is not
	// a fixed value (DefaultDoc then says what it is).
	Default string
	// DefaultDoc is how the documentation shows the default when Default
	// alone does not say it ("`30d` (720h)"); "" otherwise.
	DefaultDoc string
	// Required is the roles that cannot start without the setting (0: none).
	Required Role
	// Secret marks a credential, or a value that may hold one: an error
	// never repeats its value, and deployments keep it in a secret store
	// (the Kubernetes Secret, not the ConfigMap).
	Secret bool
	// Doc says what the setting does, in Markdown.
	Doc string

	// parse stores a set (non-empty, trimmed) value in c; nil for the one
	// setting Load reads itself (GATEWAY_CONFIG_FILE).
	parse func(c *Config, v string) error
	// fallback sets the default of a setting whose default is not a fixed
	// value (a directory under the working one, another setting's value).
	fallback func(c *Config)
	// namesEntry says parse errors name the bad entry of a list, so the
	// whole value is not repeated.
	namesEntry bool
	// check reports what is wrong with the setting in c for a process of
	// the given role; nil when any value parse accepts will do.
	check func(c Config, role Role, bad complaint)
}

// complaint reports one bad setting; the message names it.
type complaint func(format string, a ...any)

// Settings returns the table of settings, in the order of the documentation.
func Settings() []Setting { return append([]Setting(nil), settings...) }

// Groups of settings, the sections of docs/configuration.md.
const (
	groupServer     = "Server and API"
	groupRedis      = "Redis"
	groupMessages   = "Messages and requests"
	groupLogging    = "Logging"
	groupTracing    = "Tracing"
	groupWorkers    = "Workers and delivery"
	groupTwilio     = "Twilio (SMS and voice)"
	groupWeChat     = "WeChat"
	groupEmail      = "Email"
	groupRecordings = "Call recordings"
	groupConsent    = "Consent and clinic webhooks"
	groupSenders    = "Sender rates and daily quotas"
	groupAdmission  = "Admission control"
	groupQuiet      = "Quiet hours and time zones"
	groupTemplates  = "Templates"
	groupBroadcasts = "Broadcasts and prices"
)

// groupNotes are lines the documentation adds after a group's table.
var groupNotes = map[string]string{
	groupAdmission: "See [security](security.md#admission-control).",
}

var settings = []Setting{
	// Server and API
	{Name: "GATEWAY_CONFIG_FILE", Group: groupServer,
		Doc: "File of `KEY=VALUE` defaults (see above)."},
	{Name: "GATEWAY_ADDR", Group: groupServer, Default: ":8080",
		Doc:   "Where the HTTP API listens.",
		parse: text(func(c *Config) *string { return &c.Addr }),
		check: func(c Config, role Role, bad complaint) {
			if role&RoleAPI != 0 && c.Addr == "" {
				bad("GATEWAY_ADDR is empty")
			}
		}},
	{Name: "GATEWAY_HEALTH_ADDR", Group: groupServer,
		Doc: "The former name of `GATEWAY_OPS_ADDR`, still read when `GATEWAY_OPS_ADDR` is not set.",
		parse: func(c *Config, v string) error {
			c.OpsAddr, c.opsAddrSet = v, true
			if v == "off" {
				c.OpsAddr = ""
			}
			return nil
		}},
	{Name: "GATEWAY_OPS_ADDR", Group: groupServer, DefaultDoc: "`:8081`",
		Doc: "The internal operations listener, which every process (`serve`, `worker`, `all`) starts: " +
			"`GET /metrics` (Prometheus, no authentication), `GET /healthz` and `GET /readyz` (orchestrator " +
			"probes) and the queue dashboard under `/queues/` (with `GATEWAY_OPS_USERS`). Keep it off the " +
			"public network: expose it to Prometheus and the operators only. `off` turns it off. " +
			"`serve` and `all` also answer `/healthz` and `/readyz` on `GATEWAY_ADDR`. " +
			"See [operations](operations.md).",
		parse: func(c *Config, v string) error {
			c.OpsAddr, c.opsAddrSet = v, true
			if v == "off" {
				c.OpsAddr = ""
			}
			return nil
		},
		fallback: func(c *Config) {
			if !c.opsAddrSet {
				c.OpsAddr = ":8081"
			}
		}},
	{Name: "GATEWAY_OPS_USERS", Group: groupServer, Secret: true, namesEntry: true,
		Doc: "The operators who may open the queue dashboard on `GATEWAY_OPS_ADDR`, with HTTP basic " +
			"authentication: `name:bcrypt-hash,name:bcrypt-hash`, each hash as `htpasswd -nbB -C 12 name " +
			"password` prints it (cost 10 or more). Unset, the dashboard is not served. In a compose " +
			"file's `environment:`, write each `$` of a hash as `$$`.",
		parse: func(c *Config, v string) error {
			users := map[string]string{}
			for i, entry := range strings.Split(v, ",") {
				name, hash, ok := strings.Cut(strings.TrimSpace(entry), ":")
				if !ok || name == "" {
					return fmt.Errorf("entry %d: want name:bcrypt-hash", i+1)
				}
				if cost, err := bcrypt.Cost([]byte(hash)); err != nil || cost < 10 {
					return fmt.Errorf("entry %d (%s): want a bcrypt hash of cost 10 or more (htpasswd -nbB -C 12)", i+1, name)
				}
				if _, dup := users[name]; dup {
					return fmt.Errorf("entry %d: %s is named twice", i+1, name)
				}
				users[name] = hash
			}
			c.OpsUsers = users
			return nil
		}},
	{Name: "GATEWAY_OPS_READ_ONLY", Group: groupServer, Default: "true",
		Doc: "`false` lets the queue dashboard's users act on the queues (pause, delete, run, archive " +
			"tasks); by default they can only look. Also accepts `1`/`yes` and `0`/`no`.",
		parse: func(c *Config, v string) error {
			switch strings.ToLower(v) {
			case "false", "0", "no":
				c.OpsReadOnly = false
			case "true", "1", "yes":
				c.OpsReadOnly = true
			default:
				return errors.New("want true or false")
			}
			return nil
		}},
	{Name: "GATEWAY_PUBLIC_URL", Group: groupServer, Required: RoleAll,
		Doc: "The base URL the providers use to reach this gateway, exactly as they see it: scheme " +
			"(`http` or `https`), host, port if not the default; no path, no query. Example: " +
			"`https://gateway.example-clinic.org`. Status callback URLs and the URLs a call fetches " +
			"its TwiML from are built from it, and webhook signatures are checked against it. A " +
			"trailing `/` is dropped.",
		parse: func(c *Config, v string) error {
			c.PublicURL = strings.TrimRight(v, "/")
			return nil
		},
		check: func(c Config, _ Role, bad complaint) {
			if u, err := url.Parse(c.PublicURL); c.PublicURL == "" {
				bad("GATEWAY_PUBLIC_URL is required: the base URL providers call back, e.g. https://gateway.example-clinic.org")
			} else if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
				bad("GATEWAY_PUBLIC_URL=%q: want an absolute http(s) URL with no path or query", c.PublicURL)
			}
		}},
	{Name: "GATEWAY_API_KEYS", Group: groupServer, Required: RoleAPI, Secret: true,
		Doc: "The bootstrap API keys, comma-separated `tenant:key` pairs: they declare the gateway's tenants, " +
			"and each key has every scope. Tenants: letters, digits, `-`, `_`, at most 64. " +
			"Keys: at least 16 characters, each used once. Hand integrations managed keys with only the scopes " +
			"they need instead (`gateway keys create`, `POST /v1/api-keys`; no restart), and keep these for making " +
			"the first ones and as break-glass: see [API keys](operations.md#api-keys).",
		parse: func(c *Config, v string) error {
			keys, err := parseAPIKeys(v)
			c.APIKeys = keys
			return err
		},
		check: func(c Config, role Role, bad complaint) {
			if role&RoleAPI != 0 && len(c.APIKeys) == 0 {
				bad("GATEWAY_API_KEYS is required: comma-separated tenant:key pairs, keys at least 16 characters")
			}
		}},

	// Redis
	{Name: "REDIS_URL", Group: groupRedis, Default: "redis://127.0.0.1:6379/0", Secret: true,
		Doc: "The Redis to use: `redis://[user:password@]host:port/db`, `rediss://…` for TLS, or " +
			"`unix:///path/to/socket`. With `REDIS_CLUSTER=true` it lists the seed nodes: " +
			"`redis://[user:password@]node1:6379?addr=node2:6379&addr=node3:6379`. With Sentinel only " +
			"its user, password and database are used.",
		parse: text(func(c *Config) *string { return &c.RedisURL }),
		check: func(c Config, _ Role, bad complaint) {
			if err := checkRedisURL(c.RedisURL, c.RedisCluster); err != nil {
				bad("REDIS_URL: %v", err) // the URL may hold a password: not echoed
			}
		}},
	{Name: "REDIS_CLUSTER", Group: groupRedis, Default: "false",
		Doc: "`true` to use Redis Cluster (seed nodes in `REDIS_URL`). Also accepts `1`/`yes` and " +
			"`0`/`no`.",
		parse: func(c *Config, v string) error {
			switch strings.ToLower(v) {
			case "false", "0", "no":
				c.RedisCluster = false
			case "true", "1", "yes":
				c.RedisCluster = true
			default:
				return errors.New("want true or false")
			}
			return nil
		},
		check: func(c Config, _ Role, bad complaint) {
			if c.RedisCluster && c.RedisSentinelMaster != "" {
				bad("REDIS_CLUSTER and REDIS_SENTINEL_MASTER exclude each other")
			}
		}},
	{Name: "REDIS_SENTINEL_MASTER", Group: groupRedis,
		Doc: "The primary's name as the sentinels know it; set it with `REDIS_SENTINEL_ADDRS` to use " +
			"Redis Sentinel. Cannot be combined with `REDIS_CLUSTER`.",
		parse: text(func(c *Config) *string { return &c.RedisSentinelMaster })},
	{Name: "REDIS_SENTINEL_ADDRS", Group: groupRedis,
		Doc: "The sentinels, `host:port,host:port`. Required with `REDIS_SENTINEL_MASTER`, refused " +
			"without it.",
		parse: list(func(c *Config) *[]string { return &c.RedisSentinelAddrs }),
		check: func(c Config, _ Role, bad complaint) {
			switch {
			case c.RedisSentinelMaster != "" && len(c.RedisSentinelAddrs) == 0:
				bad("REDIS_SENTINEL_ADDRS is required with REDIS_SENTINEL_MASTER: the sentinels as host:port,host:port")
			case c.RedisSentinelMaster == "" && len(c.RedisSentinelAddrs) > 0:
				bad("REDIS_SENTINEL_ADDRS is set but REDIS_SENTINEL_MASTER (the monitored primary's name) is not")
			}
		}},
	{Name: "REDIS_MIN_REPLICAS_ACK", Group: groupRedis, Default: "0", DefaultDoc: "`0` (no waiting: a single Redis)",
		Doc: "With replicas (Sentinel, or Cluster with replicas): the fewest replicas that must acknowledge " +
			"a request's writes before the API answers 2xx, a worker calls the provider and a webhook is " +
			"answered; every replica online lately is waited for. Past `REDIS_REPLICA_ACK_TIMEOUT`: 503 " +
			"`/problems/not-replicated`. See [failover](failover.md).",
		parse: func(c *Config, v string) error {
			n, err := strconv.Atoi(v)
			c.Replication.MinReplicasAck = n
			if err != nil || n < 0 || n > MaxReplicasAck {
				return fmt.Errorf("want how many replicas must have a write before it is acknowledged, from 0 (none: a single Redis) to %d", MaxReplicasAck)
			}
			return nil
		},
		check: func(c Config, _ Role, bad complaint) {
			if n := c.Replication.MinReplicasAck; n < 0 || n > MaxReplicasAck {
				bad("REDIS_MIN_REPLICAS_ACK=%d: want 0 to %d", n, MaxReplicasAck)
			}
		}},
	{Name: "REDIS_REPLICA_ACK_TIMEOUT", Group: groupRedis, Default: "500ms",
		Doc: "How long a request waits for the replicas' acknowledgement; at most `2s` (the wait must end " +
			"within the Redis client's read timeout).",
		parse: duration(func(c *Config) *time.Duration { return &c.Replication.AckTimeout }),
		check: func(c Config, _ Role, bad complaint) {
			if d := c.Replication.AckTimeout; d < time.Millisecond || d > MaxReplicaAckTimeout {
				bad("REDIS_REPLICA_ACK_TIMEOUT=%s: want 1ms to %s (the wait must end within the Redis client's read timeout)", d, MaxReplicaAckTimeout)
			}
		}},
	{Name: "REDIS_FAILOVER_WAIT", Group: groupRedis, Default: "2s",
		Doc: "With `REDIS_MIN_REPLICAS_ACK`: how long `POST /v1/messages` with an `Idempotency-Key` waits out a " +
			"failover (writes not confirmed on the replicas, or no primary to write to) and is run again on the " +
			"new primary before it is answered 503; the key makes the message once. At most `5s`; `0` answers " +
			"503 at once. See [failover](failover.md#what-a-failover-costs).",
		parse: func(c *Config, v string) error {
			d, err := parseDuration(v)
			if err != nil || d < 0 {
				return errors.New("want a duration such as 2s, or 0 to answer 503 at once")
			}
			c.Replication.FailoverWait = d
			return nil
		},
		check: func(c Config, _ Role, bad complaint) {
			if d := c.Replication.FailoverWait; d < 0 || d > MaxFailoverWait {
				bad("REDIS_FAILOVER_WAIT=%s: want 0 to %s (the request's own deadline is 10s)", d, MaxFailoverWait)
			}
		}},

	// Messages and requests
	{Name: "GATEWAY_RETENTION", Group: groupMessages, Default: "30d", DefaultDoc: "`30d` (720h)",
		Doc: "How long a message record stays queryable after it was created (at least `1h`). See " +
			"[retention](privacy-and-retention.md#retention).",
		parse: duration(func(c *Config) *time.Duration { return &c.Retention }),
		check: func(c Config, _ Role, bad complaint) {
			if c.Retention < time.Hour {
				bad("GATEWAY_RETENTION=%s: must be at least 1h", c.Retention)
			}
		}},
	{Name: "GATEWAY_HOT_RETENTION", Group: groupMessages, Default: "48h",
		Doc: "How long a message stays in Redis once it has reached a final status (or stayed at `sent` for 4 days: " +
			"no report is coming), counted from when it was made " +
			"(at least `1h`, e.g. `48h`); then the workers move it, with its history, to the blob store (`BLOB_URL`, " +
			"sealed with `RECORDING_KEYS`); `GET /v1/messages/{id}`, the message log and conversations read it there. " +
			"`off`, or a window as long as `GATEWAY_RETENTION`, keeps every message in Redis for the whole retention. " +
			"See [retention](privacy-and-retention.md#retention).",
		parse: durationOrOff(func(c *Config) *time.Duration { return &c.HotRetention }),
		check: func(c Config, _ Role, bad complaint) {
			if c.HotRetention != 0 && c.HotRetention < time.Hour {
				bad("GATEWAY_HOT_RETENTION=%s: must be at least 1h, or off", c.HotRetention)
			}
		}},
	{Name: "GATEWAY_IDEMPOTENCY_TTL", Group: groupMessages, Default: "24h",
		Doc: "How long an `Idempotency-Key` is remembered. Must not exceed `GATEWAY_RETENTION`: a key " +
			"that outlived its message could not return it.",
		parse: duration(func(c *Config) *time.Duration { return &c.IdempotencyTTL }),
		check: func(c Config, _ Role, bad complaint) {
			if c.IdempotencyTTL > c.Retention {
				// A key that outlived its message could not return the original and
				// would let a retried request send the message again.
				bad("GATEWAY_IDEMPOTENCY_TTL=%s: must not exceed GATEWAY_RETENTION (%s)", c.IdempotencyTTL, c.Retention)
			}
		}},
	{Name: "GATEWAY_MAX_REQUEST_BYTES", Group: groupMessages, Default: "65536",
		Doc:   "Largest request body accepted (at least 4096); larger gets 413.",
		parse: whole(func(c *Config) *int { return &c.MaxRequestBytes }),
		check: func(c Config, role Role, bad complaint) {
			if role&RoleAPI != 0 && c.MaxRequestBytes < 4<<10 {
				bad("GATEWAY_MAX_REQUEST_BYTES=%d: must be at least 4096", c.MaxRequestBytes)
			}
		}},
	{Name: "GATEWAY_MAX_UPLOAD_BYTES", Group: groupMessages, Default: "20971520", DefaultDoc: "`20971520` (20 MiB)",
		Doc: "Largest audience CSV accepted by `POST /v1/audiences`, the one request that may be " +
			"larger than `GATEWAY_MAX_REQUEST_BYTES` (at least that, at most 209715200, 200 MiB); " +
			"larger gets 413.",
		parse: whole(func(c *Config) *int { return &c.MaxUploadBytes }),
		check: func(c Config, role Role, bad complaint) {
			if role&RoleAPI != 0 && (c.MaxUploadBytes < c.MaxRequestBytes || c.MaxUploadBytes > 200<<20) {
				bad("GATEWAY_MAX_UPLOAD_BYTES=%d: must be at least GATEWAY_MAX_REQUEST_BYTES and at most 209715200 (200 MiB)", c.MaxUploadBytes)
			}
		}},
	{Name: "GATEWAY_DEFAULT_REGION", Group: groupMessages,
		Doc: "Region (ISO 3166 code: `US`, `CN`) of phone numbers written without `+country` in " +
			"uploaded audiences (unless the upload gives `?default_region=`) and in a broadcast's " +
			"inline audience. Unset, such numbers are refused.",
		parse: func(c *Config, v string) error {
			c.DefaultRegion = strings.ToUpper(v)
			return nil
		},
		check: func(c Config, _ Role, bad complaint) {
			if r := c.DefaultRegion; r != "" && phonenumbers.GetCountryCodeForRegion(r) == 0 {
				bad("GATEWAY_DEFAULT_REGION=%q: want a region code such as US or CN", r)
			}
		}},
	{Name: "GATEWAY_SHUTDOWN_TIMEOUT", Group: groupMessages, Default: "25s",
		Doc: "How long a graceful stop lets in-flight sends finish; the whole stop takes at most this " +
			"plus 5 s. See [graceful shutdown](deployment.md#graceful-shutdown).",
		parse: duration(func(c *Config) *time.Duration { return &c.ShutdownTimeout })},

	// Logging
	{Name: "LOG_LEVEL", Group: groupLogging, Default: "info",
		Doc:   "`debug`, `info`, `warn` or `error`.",
		parse: text(func(c *Config) *string { return &c.LogLevel }),
		check: func(c Config, _ Role, bad complaint) {
			switch c.LogLevel {
			case "debug", "info", "warn", "error":
			default:
				bad("LOG_LEVEL=%q: want debug, info, warn or error", c.LogLevel)
			}
		}},
	{Name: "LOG_FORMAT", Group: groupLogging, Default: "json",
		Doc:   "`json` or `text` (`dev` uses `text` unless the environment sets it).",
		parse: text(func(c *Config) *string { return &c.LogFormat }),
		check: func(c Config, _ Role, bad complaint) {
			switch c.LogFormat {
			case "json", "text":
			default:
				bad("LOG_FORMAT=%q: want json or text", c.LogFormat)
			}
		}},
	// Tracing
	{Name: "OTEL_EXPORTER_OTLP_ENDPOINT", Group: groupTracing,
		Doc: "The OTLP/HTTP collector that receives the gateway's traces, e.g. `http://otel-collector:4318` " +
			"(`/v1/traces` is appended). Not set: no tracing, and no spans are made. The exporter's other " +
			"`OTEL_EXPORTER_OTLP_*` variables (headers, certificates, timeout) apply as OpenTelemetry documents " +
			"them. See [tracing](operations.md#tracing).",
		parse: text(func(c *Config) *string { return &c.Tracing.Endpoint }),
		check: func(c Config, _ Role, bad complaint) {
			if e := c.Tracing.Endpoint; e != "" && (!isHTTPURL(e) || strings.ContainsAny(e, "?#")) {
				bad("OTEL_EXPORTER_OTLP_ENDPOINT: want an http(s) URL without a query, e.g. http://otel-collector:4318")
			}
		}},
	{Name: "OTEL_SERVICE_NAME", Group: groupTracing, Default: "patient-messaging-gateway",
		Doc:   "The service name of the gateway's spans (with tracing on).",
		parse: text(func(c *Config) *string { return &c.Tracing.ServiceName })},

	// Workers and delivery
	{Name: "WORKER_CONCURRENCY", Group: groupWorkers, Default: "20",
		Doc: "Sends in flight per worker process in the shared pool (high, normal and bulk, weighted " +
			"6:3:1).",
		parse: whole(func(c *Config) *int { return &c.Worker.Concurrency })},
	{Name: "WORKER_CRISIS_CONCURRENCY", Group: groupWorkers, Default: "10",
		Doc:   "Sends in flight per worker process in the pool reserved for the crisis queue.",
		parse: whole(func(c *Config) *int { return &c.Worker.CrisisConcurrency })},
	{Name: "WORKER_REPLY_CONCURRENCY", Group: groupWorkers, Default: "16",
		Doc: "Patients' answers filed at once per worker process, in a pool no send uses (matching the answer " +
			"to its question, the reply feed, urgent words, the next question of a questionnaire).",
		parse: whole(func(c *Config) *int { return &c.Worker.ReplyConcurrency })},
	{Name: "DELIVERY_MAX_ATTEMPTS", Group: groupWorkers, Default: "8",
		Doc: "Most provider attempts per message (at most 50). Throttled attempts (up to 20) and calls " +
			"placed again after no answer do not count.",
		parse: whole(func(c *Config) *int { return &c.Worker.MaxAttempts }),
		check: func(c Config, _ Role, bad complaint) {
			if c.Worker.MaxAttempts > 50 {
				bad("DELIVERY_MAX_ATTEMPTS=%d: at most 50", c.Worker.MaxAttempts)
			}
		}},
	{Name: "PROVIDER_TIMEOUT", Group: groupWorkers, Default: "10s",
		Doc: "Timeout of one provider call: a Twilio or WeChat API request; for email, setting up an " +
			"SMTP connection and then each message's SMTP exchange; for a recording download, the " +
			"wait for Twilio's answer. One attempt (call plus ledger writes) is bounded by this + 15 " +
			"s.",
		parse: duration(func(c *Config) *time.Duration { return &c.Worker.ProviderTimeout })},
	{Name: "DELIVERY_UNCONFIRMED_GRACE", Group: groupWorkers, Default: "1m",
		Doc: "After an attempt whose outcome is unknown (timeout, crash mid-call), how long the next " +
			"attempt waits for the provider's status callback before sending again.",
		parse: duration(func(c *Config) *time.Duration { return &c.Worker.UnconfirmedGrace })},
	{Name: "DELIVERY_REPORT_WAIT", Group: groupWorkers, Default: "10m",
		Doc: "How long an SMS or a call may wait at `sent` for Twilio's final status callback before the workers ask " +
			"Twilio for its status (a callback Twilio could not deliver is never sent again); asked again every " +
			"such wait for 3 days.",
		parse: duration(func(c *Config) *time.Duration { return &c.Worker.ReportWait })},
	{Name: "WORKER_POLL_INTERVAL", Group: groupWorkers, Default: "100ms",
		Doc:   "How often idle workers look for new tasks.",
		parse: duration(func(c *Config) *time.Duration { return &c.Worker.PollInterval })},
	{Name: "WORKER_DELAYED_POLL_INTERVAL", Group: groupWorkers, Default: "1s",
		Doc:   "How often scheduled (`send_at`) and retried tasks are moved to their queue.",
		parse: duration(func(c *Config) *time.Duration { return &c.Worker.DelayedPollInterval })},

	// Twilio (SMS and voice)
	{Name: "TWILIO_ACCOUNT_SID", Group: groupTwilio,
		Doc: "Account SID (`AC` + 32 characters). Setting any Twilio setting turns SMS on and makes " +
			"this required.",
		parse: text(func(c *Config) *string { return &c.Twilio.AccountSID }),
		check: func(c Config, _ Role, bad complaint) {
			if sid := c.Twilio.AccountSID; c.Twilio.Enabled() && (!strings.HasPrefix(sid, "AC") || len(sid) != 34) {
				bad("TWILIO_ACCOUNT_SID: want the 34-character account SID starting with AC")
			}
		}},
	{Name: "TWILIO_AUTH_TOKEN", Group: groupTwilio, Secret: true,
		Doc: "Auth token; also verifies Twilio's webhook signatures. Required with the Twilio " +
			"settings.",
		parse: text(func(c *Config) *string { return &c.Twilio.AuthToken }),
		check: func(c Config, _ Role, bad complaint) {
			if c.Twilio.Enabled() && c.Twilio.AuthToken == "" {
				bad("TWILIO_AUTH_TOKEN is required (it also verifies Twilio's webhook signatures)")
			}
		}},
	{Name: "TWILIO_FROM", Group: groupTwilio,
		Doc: "SMS sender number in E.164 (`+14155550100`). With the Twilio settings, required unless " +
			"`TWILIO_MESSAGING_SERVICE_SID` is set.",
		parse: text(func(c *Config) *string { return &c.Twilio.From }),
		check: func(c Config, _ Role, bad complaint) {
			t := c.Twilio
			switch {
			case !t.Enabled():
			case t.From == "" && t.MessagingServiceSID == "":
				bad("set TWILIO_FROM (an E.164 number) or TWILIO_MESSAGING_SERVICE_SID")
			case t.From != "" && !isE164(t.From):
				bad("TWILIO_FROM=%q: want an E.164 number such as +14155550100", t.From)
			}
		}},
	{Name: "TWILIO_MESSAGING_SERVICE_SID", Group: groupTwilio,
		Doc: "Messaging Service (`MG` + 32 characters), used for SMS instead of `TWILIO_FROM` when " +
			"set.",
		parse: text(func(c *Config) *string { return &c.Twilio.MessagingServiceSID }),
		check: func(c Config, _ Role, bad complaint) {
			if sid := c.Twilio.MessagingServiceSID; sid != "" && (!strings.HasPrefix(sid, "MG") || len(sid) != 34) {
				bad("TWILIO_MESSAGING_SERVICE_SID: want the 34-character SID starting with MG")
			}
		}},
	{Name: "TWILIO_API_URL", Group: groupTwilio, Default: "https://api.twilio.com",
		Doc: "Twilio's API base URL; point it at a simulator or a staging fake to reroute the real " +
			"client.",
		parse: func(c *Config, v string) error {
			c.Twilio.APIURL = strings.TrimRight(v, "/")
			return nil
		},
		check: func(c Config, _ Role, bad complaint) {
			if c.Twilio.Enabled() && !isHTTPURL(c.Twilio.APIURL) {
				bad("TWILIO_API_URL=%q: want an absolute http(s) URL", c.Twilio.APIURL)
			}
		}},
	{Name: "TWILIO_VOICE_FROM", Group: groupTwilio, DefaultDoc: "none (voice off)",
		Doc: "Caller number of voice calls in E.164: a Twilio number of the account, or a caller ID " +
			"verified in it. Setting it (with the account settings) turns the voice channel on, which " +
			"also opens `BLOB_URL`.",
		parse: text(func(c *Config) *string { return &c.Voice.From }),
		check: func(c Config, _ Role, bad complaint) {
			v := c.Voice.From
			if v != "" && !c.Twilio.Enabled() {
				bad("TWILIO_VOICE_FROM needs the Twilio account settings (TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN)")
			}
			if v != "" && !isE164(v) {
				bad("TWILIO_VOICE_FROM=%q: want an E.164 number such as +14155550100", v)
			}
		}},
	{Name: "VOICE_CALLS_PER_SECOND", Group: groupTwilio, Default: "1",
		Doc: "The voice sender's rate: calls started per second from the caller number, across all " +
			"workers; above 0, at most 100 (`0.5` is one call every two seconds). Twilio's default is " +
			"1 call per second. No daily limit.",
		parse: perSecond(func(c *Config) *float64 { return &c.Voice.CallsPerSecond }, 100)},
	{Name: "VOICE_MAX_CALLS", Group: groupTwilio, Default: "3",
		Doc: "Calls a voice message gets in all when the line is busy or nobody answers (1–10); after " +
			"the last, it is `undelivered`. These calls have their own budget: they do not count " +
			"against `DELIVERY_MAX_ATTEMPTS`.",
		parse: whole(func(c *Config) *int { return &c.Voice.MaxCalls }),
		check: func(c Config, _ Role, bad complaint) {
			if c.Voice.MaxCalls > 10 {
				bad("VOICE_MAX_CALLS=%d: at most 10", c.Voice.MaxCalls)
			}
		}},
	{Name: "VOICE_REDIAL_DELAY", Group: groupTwilio, Default: "30m",
		Doc:   "Wait between those calls.",
		parse: duration(func(c *Config) *time.Duration { return &c.Voice.RedialDelay })},

	// WeChat
	{Name: "WECHAT_APP_ID", Group: groupWeChat,
		Doc: "The official account's AppID. Setting it or `WECHAT_APP_SECRET` turns WeChat on; both " +
			"are then required.",
		parse: text(func(c *Config) *string { return &c.WeChat.AppID }),
		check: func(c Config, _ Role, bad complaint) {
			if w := c.WeChat; w.Enabled() && (w.AppID == "" || w.AppSecret == "") {
				bad("WECHAT_APP_ID and WECHAT_APP_SECRET are both required for WeChat")
			}
		}},
	{Name: "WECHAT_APP_SECRET", Group: groupWeChat, Secret: true,
		Doc:   "The official account's AppSecret.",
		parse: text(func(c *Config) *string { return &c.WeChat.AppSecret })},
	{Name: "WECHAT_TOKEN", Group: groupWeChat, Secret: true,
		Doc: "The official account's server Token (服务器配置). Setting it serves WeChat's pushes (users' " +
			"messages and events) at `/webhooks/wechat`, signature-checked with it. Without it the " +
			"pushes are not served, and the start-up log says so.",
		parse: text(func(c *Config) *string { return &c.WeChat.Token })},
	{Name: "WECHAT_ENCODING_AES_KEY", Group: groupWeChat, Secret: true,
		Doc: "The 43-character EncodingAESKey for safe mode (安全模式): decrypts pushes and encrypts " +
			"passive replies. With it set, plaintext pushes are refused.",
		parse: text(func(c *Config) *string { return &c.WeChat.EncodingAESKey }),
		check: func(c Config, _ Role, bad complaint) {
			if k := c.WeChat.EncodingAESKey; c.WeChat.Enabled() && k != "" && len(k) != 43 {
				bad("WECHAT_ENCODING_AES_KEY: want the 43-character EncodingAESKey of the official account")
			}
		}},
	{Name: "WECHAT_API_URL", Group: groupWeChat, Default: "https://api.weixin.qq.com",
		Doc: "WeChat's API base URL; point it at a simulator to reroute the client.",
		parse: func(c *Config, v string) error {
			c.WeChat.APIURL = strings.TrimRight(v, "/")
			return nil
		},
		check: func(c Config, _ Role, bad complaint) {
			if c.WeChat.Enabled() && !isHTTPURL(c.WeChat.APIURL) {
				bad("WECHAT_API_URL=%q: want an absolute http(s) URL", c.WeChat.APIURL)
			}
		}},

	// Email
	{Name: "SMTP_URL", Group: groupEmail, Secret: true,
		Doc: "The SMTP server: `smtp://user:password@host:587` (STARTTLS, required), " +
			"`smtps://user:password@host:465` (TLS) or `smtp+insecure://host:port` (plain, loopback " +
			"only); see [Email](channels.md#email). Setting it or `EMAIL_FROM` turns email on; both " +
			"are then required.",
		parse: text(func(c *Config) *string { return &c.Email.SMTPURL }),
		check: func(c Config, _ Role, bad complaint) {
			e := c.Email
			switch {
			case !e.Enabled():
			case e.SMTPURL == "" || e.From == "":
				bad("SMTP_URL and EMAIL_FROM are both required for email")
			default:
				if _, err := email.ParseURL(e.SMTPURL); err != nil {
					bad("%v", err) // names SMTP_URL, never its password
				}
			}
		}},
	{Name: "EMAIL_FROM", Group: groupEmail,
		Doc: "The sender, e.g. `Clinic <noreply@example-clinic.org>`: an ASCII address (the display " +
			"name may be in any language). Its domain ends every `Message-ID`; bulk mail offers " +
			"unsubscription to it.",
		parse: text(func(c *Config) *string { return &c.Email.From }),
		check: func(c Config, _ Role, bad complaint) {
			if from := c.Email.From; from != "" {
				if err := email.CheckFrom(from); err != nil {
					bad("%v", err) // names EMAIL_FROM
				}
			}
		}},
	{Name: "SMTP_POOL_SIZE", Group: groupEmail, Default: "4",
		Doc:   "Most SMTP connections one process keeps open.",
		parse: whole(func(c *Config) *int { return &c.Email.PoolSize })},
	{Name: "EMAIL_RETURN_DOMAIN", Group: groupEmail,
		Doc: "The domain of each email's own return path (`bounce+<id>.<signature>@`, the envelope " +
			"sender bounces go to) and `Reply-To` (`reply+<id>.<signature>@`); its MX record points at " +
			"`EMAIL_INBOUND_ADDR`. Unset, email keeps `EMAIL_FROM` as its envelope sender and learns " +
			"nothing after the relay took it. Needs `EMAIL_RETURN_SECRET`. See " +
			"[bounces, complaints and replies](channels.md#bounces-complaints-unsubscribe-and-replies).",
		parse: text(func(c *Config) *string { return &c.Email.ReturnDomain }),
		check: func(c Config, _ Role, bad complaint) {
			if d := c.Email.ReturnDomain; d != "" {
				if err := returnpath.CheckDomain(d); err != nil {
					bad("%v", err)
				}
			}
		}},
	{Name: "EMAIL_RETURN_SECRET", Group: groupEmail, Secret: true,
		Doc: "At least 32 random characters (`openssl rand -hex 32`) that sign the return path, the " +
			"`Reply-To` and the one-click unsubscribe link of each email, so that none can be forged for " +
			"another message. With it, bulk email offers one-click unsubscription (RFC 8058) at " +
			"`GATEWAY_PUBLIC_URL/u/<token>`. Changing it voids the links and addresses of mail already sent.",
		parse: text(func(c *Config) *string { return &c.Email.ReturnSecret }),
		check: func(c Config, _ Role, bad complaint) {
			e := c.Email
			switch {
			case e.ReturnSecret != "" && len(e.ReturnSecret) < returnpath.MinSecret:
				bad("EMAIL_RETURN_SECRET must be at least %d characters", returnpath.MinSecret)
			case e.ReturnDomain != "" && e.ReturnSecret == "":
				bad("EMAIL_RETURN_DOMAIN needs EMAIL_RETURN_SECRET to sign the return addresses")
			}
		}},
	{Name: "EMAIL_INBOUND_ADDR", Group: groupEmail,
		Doc: "Where the API process (`serve`, `all`) listens for SMTP mail to `EMAIL_RETURN_DOMAIN`, e.g. " +
			"`:2525` behind the MX's port 25: delivery status notifications, complaints (ARF) and patients' " +
			"replies. It accepts only the signed `bounce+` and `reply+` addresses and relays nothing. Unset: off.",
		parse: text(func(c *Config) *string { return &c.Email.InboundAddr }),
		check: func(c Config, _ Role, bad complaint) {
			if c.Email.InboundAddr != "" && (c.Email.ReturnDomain == "" || !c.Email.Enabled()) {
				bad("EMAIL_INBOUND_ADDR needs email (SMTP_URL, EMAIL_FROM) and EMAIL_RETURN_DOMAIN")
			}
		}},
	{Name: "EMAIL_INBOUND_MAX_BYTES", Group: groupEmail, Default: "2097152", DefaultDoc: "`2097152` (2 MiB)",
		Doc:   "Largest mail the inbound listener accepts (at least 65536); larger is refused with 552.",
		parse: whole(func(c *Config) *int { return &c.Email.InboundMaxBytes }),
		check: func(c Config, _ Role, bad complaint) {
			if c.Email.InboundMaxBytes < 64<<10 {
				bad("EMAIL_INBOUND_MAX_BYTES=%d: must be at least 65536", c.Email.InboundMaxBytes)
			}
		}},
	{Name: "EMAIL_INBOUND_RATE", Group: groupEmail, Default: "60",
		Doc:   "Mails a minute the inbound listener takes from one client IP; more are deferred with 450.",
		parse: whole(func(c *Config) *int { return &c.Email.InboundPerMinute }),
		check: func(c Config, _ Role, bad complaint) {
			if c.Email.InboundPerMinute < 1 {
				bad("EMAIL_INBOUND_RATE must be at least 1")
			}
		}},
	{Name: "EMAIL_DSN", Group: groupEmail, Default: "true",
		Doc: "With `EMAIL_RETURN_DOMAIN`, each email asks the relay for delivery status notifications " +
			"(RFC 3461 `NOTIFY=SUCCESS,FAILURE,DELAY` with `RET=HDRS`: headers only, never the body) " +
			"when the relay offers DSN; a success report makes the email `delivered`. `false` asks " +
			"nothing, for a relay that mishandles them. Also accepts `1`/`yes` and `0`/`no`. See " +
			"[delivery reports](channels.md#bounces-complaints-unsubscribe-and-replies).",
		parse: func(c *Config, v string) error {
			switch strings.ToLower(v) {
			case "false", "0", "no":
				c.Email.DSN = false
			case "true", "1", "yes":
				c.Email.DSN = true
			default:
				return errors.New("want true or false")
			}
			return nil
		}},
	{Name: "EMAIL_WEBHOOK_SECRET", Group: groupEmail, Secret: true,
		Doc: "Serves `POST /webhooks/email/events` for relays that report bounces, complaints and " +
			"unsubscriptions by webhook: the body signed as `X-Gateway-Signature: t=<unix>,v1=<HMAC-SHA256 " +
			"of \"t.body\">` with this secret. Unset: no such route.",
		parse: text(func(c *Config) *string { return &c.Email.WebhookSecret })},

	// Call recordings
	{Name: "BLOB_URL", Group: groupRecordings,
		DefaultDoc: "`file://<working directory>/data/blobs?create_dir=true&no_tmp_dir=true`",
		Doc: "Where call recordings are stored: `file:///absolute/path` (options such as " +
			"`?create_dir=true&no_tmp_dir=true`) or `s3://bucket?region=…` (credentials from the " +
			"usual AWS sources: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, a profile, an instance " +
			"or pod role). Opened by every process when voice is served; see [the blob " +
			"store](deployment.md#call-recordings-blob-store).",
		parse:    text(func(c *Config) *string { return &c.BlobURL }),
		fallback: func(c *Config) { c.BlobURL = defaultBlobURL() },
		check: func(c Config, _ Role, bad complaint) {
			if u, err := url.Parse(c.BlobURL); c.BlobURL == "" || err != nil || u.Scheme == "" {
				bad("BLOB_URL: want file:///absolute/path or s3://bucket?region=…")
			}
		}},
	{Name: "RECORDING_RETENTION", Group: groupRecordings, DefaultDoc: "`GATEWAY_RETENTION`",
		Doc: "How long a call recording is kept after it was stored. At most `GATEWAY_RETENTION`: a " +
			"recording is reached through its message.",
		parse:    duration(func(c *Config) *time.Duration { return &c.RecordingRetention }),
		fallback: func(c *Config) { c.RecordingRetention = c.Retention },
		check: func(c Config, _ Role, bad complaint) {
			if c.RecordingRetention > c.Retention {
				// A recording is reached through its message: kept longer, it could
				// no longer be read through the API, only leak.
				bad("RECORDING_RETENTION=%s: must not exceed GATEWAY_RETENTION (%s)", c.RecordingRetention, c.Retention)
			}
		}},
	{Name: "RECORDING_KEYS", Group: groupRecordings, Secret: true, DefaultDoc: "none (recordings stored as they are)",
		Doc: "The keys that encrypt call recordings at rest (AES-256-GCM): `id:base64-of-32-random-bytes` pairs, " +
			"comma separated, the current key first (32 bytes from `/dev/urandom`, base64-encoded: see [recordings at rest](operations.md#recordings-at-rest)). " +
			"To rotate, put a new key first and keep the old ones until their recordings are past " +
			"`RECORDING_RETENTION`: each recording names its key. Set it in production.",
		parse: text(func(c *Config) *string { return &c.RecordingKeys }),
		check: func(c Config, _ Role, bad complaint) {
			if c.RecordingKeys != "" {
				if _, err := recordings.ParseKeyring(c.RecordingKeys); err != nil {
					bad("RECORDING_KEYS: %v", err)
				}
			}
		}},

	// Audit log
	{Name: "GATEWAY_AUDIT_SIGNING_KEY", Group: groupAudit, Secret: true,
		Doc: "The Ed25519 key that signs the audit log's checkpoints, in the format " +
			"`gateway audit keygen` prints (`PRIVATE+KEY+<name>+<hash>+<key>`). Workers need it to " +
			"export the log to `GATEWAY_AUDIT_BLOB_URL`; without it events are still recorded in Redis " +
			"and readable with `GET /v1/audit`, but not exported or signed (a worker warns at start). " +
			"See [the audit log](audit.md#the-signing-key).",
		parse: signingKey},
	{Name: "GATEWAY_AUDIT_VERIFIER_KEYS", Group: groupAudit, DefaultDoc: "the signing key's own",
		Doc: "The verifier keys (`<name>+<hash>+<key>`, comma-separated) `gateway audit verify` " +
			"trusts: the current key's and those of keys retired, whose checkpoints stay in the store.",
		parse: verifierKeys, namesEntry: true},
	{Name: "GATEWAY_AUDIT_BLOB_URL", Group: groupAudit, DefaultDoc: "`BLOB_URL`",
		Doc: "Where the audit log is exported, as write-once objects under `audit/<tenant>/`: " +
			"`file:///absolute/path` or `s3://bucket?region=…` (a bucket with S3 Object Lock in " +
			"compliance mode keeps even its owner from changing them).",
		parse:    text(func(c *Config) *string { return &c.Audit.BlobURL }),
		fallback: func(c *Config) { c.Audit.BlobURL = c.BlobURL },
		check: func(c Config, _ Role, bad complaint) {
			if u, err := url.Parse(c.Audit.BlobURL); c.Audit.BlobURL == "" || err != nil || u.Scheme == "" {
				bad("GATEWAY_AUDIT_BLOB_URL: want file:///absolute/path or s3://bucket?region=…")
			}
		}},
	{Name: "GATEWAY_AUDIT_EXPORT_INTERVAL", Group: groupAudit, Default: "1m",
		Doc:   "How often a worker exports new audit events, each batch with a signed checkpoint.",
		parse: duration(func(c *Config) *time.Duration { return &c.Audit.ExportInterval })},
	{Name: "GATEWAY_AUDIT_RETENTION", Group: groupAudit, Default: "48h",
		Doc: "How long an exported audit event stays in Redis; `GET /v1/audit` reads older ones from the " +
			"export (`GATEWAY_AUDIT_BLOB_URL`, which every process then reads). The exported log is the " +
			"long-term record: keep it as your rules require (six years under HIPAA's documentation " +
			"rule) with the bucket's own retention. `off` keeps every event in Redis.",
		parse: durationOrOff(func(c *Config) *time.Duration { return &c.Audit.Retention })},

	// Consent and clinic webhooks
	{Name: "GATEWAY_CRISIS_OPTOUT_EXEMPT", Group: groupConsent,
		Doc: "Tenants (comma-separated) whose `crisis` messages are sent even to recipients who opted " +
			"out; each such send is noted in the message's history.",
		parse: list(func(c *Config) *[]string { return &c.CrisisOptOutExempt })},
	{Name: "GATEWAY_WEBHOOK_ATTEMPTS", Group: groupConsent, Default: "10",
		Doc:   "How often an event is offered to a clinic's endpoint before it is dead-lettered.",
		parse: whole(func(c *Config) *int { return &c.WebhookAttempts })},
	{Name: "GATEWAY_WEBHOOK_ALLOW_NETWORKS", Group: groupConsent, namesEntry: true,
		Doc: "Networks (CIDR prefixes or single addresses, comma-separated, e.g. " +
			"`10.20.0.0/16,192.168.5.7/32`) that clinic webhook endpoints and `callback_url`s may " +
			"reach although they are not public; plain `http://` is taken only for addresses in them. " +
			"Unset, the gateway posts only to public addresses over https. 0.0.0.0, `::`, multicast " +
			"and broadcast stay refused; a network wider than /8 (IPv4) or /7 (IPv6) is refused at " +
			"start-up. See [security](security.md).",
		parse: func(c *Config, v string) error {
			nets, err := egress.ParseNetworks(v)
			c.WebhookAllowNetworks = nets
			if err != nil {
				return fmt.Errorf("%w (e.g. 10.20.0.0/16,192.168.5.7/32)", err)
			}
			return nil
		},
		check: func(c Config, _ Role, bad complaint) {
			if err := egress.CheckNetworks(c.WebhookAllowNetworks); err != nil {
				bad("GATEWAY_WEBHOOK_ALLOW_NETWORKS: %v", err)
			}
		}},

	// Sender rates and daily quotas
	{Name: "SMS_SEGMENTS_PER_SECOND", Group: groupSenders, Default: "1",
		Doc: "The SMS sender's rate (`TWILIO_FROM`, or the Messaging Service), in **segments** per " +
			"second across all workers; above 0, at most 10000. What carriers take: a US long code 1, " +
			"a toll-free number 3, a short code 100 or more.",
		parse: perSecond(func(c *Config) *float64 { return &c.Senders.SMSPerSecond }, 10000)},
	{Name: "SMS_DAILY_LIMIT", Group: groupSenders, Default: "0", DefaultDoc: "`0` (none)",
		Doc:   "Segments the SMS sender sends per UTC day, for every priority.",
		parse: perDay(func(c *Config) *int64 { return &c.Senders.SMSPerDay })},
	{Name: "WECHAT_MESSAGES_PER_SECOND", Group: groupSenders, Default: "20",
		Doc: "The official account's rate, in messages per second across all workers; above 0, at most " +
			"10000.",
		parse: perSecond(func(c *Config) *float64 { return &c.Senders.WeChatPerSecond }, 10000)},
	{Name: "WECHAT_DAILY_LIMIT", Group: groupSenders, Default: "100000",
		Doc: "WeChat messages per day, counted from midnight China time (when WeChat's quota resets); " +
			"`0`: none. An official account gets about 100,000 template messages a day.",
		parse: perDay(func(c *Config) *int64 { return &c.Senders.WeChatPerDay })},
	{Name: "EMAIL_MESSAGES_PER_SECOND", Group: groupSenders, Default: "5",
		Doc:   "The SMTP relay's rate, in emails per second across all workers; above 0, at most 10000.",
		parse: perSecond(func(c *Config) *float64 { return &c.Senders.EmailPerSecond }, 10000)},
	{Name: "EMAIL_DAILY_LIMIT", Group: groupSenders, Default: "0", DefaultDoc: "`0` (none)",
		Doc:   "Emails per UTC day.",
		parse: perDay(func(c *Config) *int64 { return &c.Senders.EmailPerDay })},
	{Name: "SENDER_RECOVERY", Group: groupSenders, Default: "1m",
		Doc: "How long a sender slowed by the provider's throttling takes to climb back to its " +
			"configured rate.",
		parse: duration(func(c *Config) *time.Duration { return &c.Senders.Recovery })},

	// Admission control
	{Name: "GATEWAY_TENANT_RATE_LIMIT", Group: groupAdmission, Default: "100:200",
		Doc: "Every tenant's API requests per second, `RATE` or `RATE:BURST`, or `off`. Over it: 429 " +
			"`/problems/rate-limited` with `Retry-After`. Crisis messages, broadcasts and " +
			"cancellations are counted but never refused.",
		parse: func(c *Config, v string) error {
			r, err := ParseRateLimit(v)
			c.Admission.TenantRate = r
			return err
		},
		check: func(c Config, _ Role, bad complaint) {
			if r := c.Admission.TenantRate; !r.valid() {
				bad("GATEWAY_TENANT_RATE_LIMIT: want a rate from 0 (off) to 1000000 per second and a burst of 0 or more")
			}
		}},
	{Name: "GATEWAY_TENANT_RATE_LIMITS", Group: groupAdmission, namesEntry: true,
		Doc: "Per-tenant overrides, e.g. `clinic-a=50,clinic-b=500:1000,lab=off`.",
		parse: func(c *Config, v string) error {
			rs, err := ParseRateLimits(v)
			c.Admission.TenantRates = rs
			return err
		},
		check: func(c Config, _ Role, bad complaint) {
			for tenant, r := range c.Admission.TenantRates {
				if !validTenant(tenant) || tenant == "" || !r.valid() {
					bad("GATEWAY_TENANT_RATE_LIMITS: tenant %q: want a rate from 0 (off) to 1000000 per second and a burst of 0 or more", tenant)
				}
			}
		}},
	{Name: "GATEWAY_TENANT_BACKLOG_HOURS", Group: groupAdmission, Default: "4",
		Doc: "A tenant's queued non-crisis messages per channel, in hours of that channel's sender " +
			"rate (like Twilio's queue overflow); beyond it: 429 `/problems/backlog-full`. `0`: no " +
			"cap; at most 168.",
		parse: func(c *Config, v string) error {
			h, err := strconv.ParseFloat(v, 64)
			c.Admission.BacklogHours = h
			if err != nil || !(h >= 0 && h <= MaxBacklogHours) {
				return fmt.Errorf("want hours from 0 (no cap) to %d, e.g. 4 or 0.5", MaxBacklogHours)
			}
			return nil
		},
		check: func(c Config, _ Role, bad complaint) {
			if h := c.Admission.BacklogHours; !(h >= 0 && h <= MaxBacklogHours) {
				bad("GATEWAY_TENANT_BACKLOG_HOURS=%g: want hours from 0 (no cap) to %d", h, MaxBacklogHours)
			}
		}},
	{Name: "GATEWAY_REDIS_MEMORY_GUARD", Group: groupAdmission, Default: "80,90,97",
		Doc: "Percent of Redis `maxmemory` above which bulk, then routine, then urgent writes (crisis, " +
			"broadcasts, callbacks, patient replies) are refused with 503 `/problems/store-full`; " +
			"`off`. No guard when Redis has no `maxmemory`.",
		parse: func(c *Config, v string) error {
			g, err := ParseMemoryGuard(v)
			c.Admission.MemoryGuard = g
			return err
		},
		check: func(c Config, _ Role, bad complaint) {
			if g := c.Admission.MemoryGuard; g != (MemoryGuard{}) && !(0 < g.Bulk && g.Bulk <= g.Routine && g.Routine <= g.Urgent && g.Urgent <= 1) {
				bad("GATEWAY_REDIS_MEMORY_GUARD: the bulk, routine and urgent thresholds must rise, each above 0 and at most 100%%")
			}
		}},

	// Quiet hours and time zones
	{Name: "QUIET_HOURS", Group: groupQuiet, Default: "21:00-08:00",
		Doc: "Every tenant's default quiet window, in each recipient's local time: `HH:MM-HH:MM` " +
			"(24-hour clock, may wrap midnight), or `off`. A tenant sets its own with `PUT " +
			"/v1/settings`.",
		parse: text(func(c *Config) *string { return &c.Quiet.Window }),
		check: func(c Config, _ Role, bad complaint) {
			if _, err := schedule.ParseWindow(c.Quiet.Window); err != nil {
				bad("QUIET_HOURS=%q: %v (e.g. 21:00-08:00, or off)", c.Quiet.Window, err)
			}
		}},
	{Name: "QUIET_HOURS_CRISIS", Group: groupQuiet, Default: "send",
		Doc: "The tenants' default for crisis messages in quiet hours: `send` (they pass) or `defer` " +
			"(they wait too).",
		parse: text(func(c *Config) *string { return &c.Quiet.Crisis }),
		check: func(c Config, _ Role, bad complaint) {
			if c.Quiet.Crisis != "send" && c.Quiet.Crisis != "defer" {
				bad("QUIET_HOURS_CRISIS=%q: want send (crisis messages pass quiet hours) or defer", c.Quiet.Crisis)
			}
		}},
	{Name: "GATEWAY_DEFAULT_TIMEZONE", Group: groupQuiet, Default: "UTC",
		Doc: "IANA time zone (`Asia/Shanghai`) of recipients whose zone nothing else tells; also every " +
			"tenant's default `timezone`.",
		parse: text(func(c *Config) *string { return &c.Quiet.TimeZone }),
		check: func(c Config, _ Role, bad complaint) {
			if _, err := schedule.LoadZone(c.Quiet.TimeZone); err != nil {
				bad("GATEWAY_DEFAULT_TIMEZONE=%q: want an IANA time zone such as Asia/Shanghai or America/New_York", c.Quiet.TimeZone)
			}
		}},

	// Templates
	{Name: "TEMPLATE_DEFAULT_LOCALE", Group: groupTemplates, Default: "en",
		Doc:   "The locale every template fallback chain ends with, a BCP 47 tag.",
		parse: text(func(c *Config) *string { return &c.Templates.DefaultLocale }),
		check: func(c Config, _ Role, bad complaint) {
			if _, err := language.Parse(c.Templates.DefaultLocale); err != nil {
				bad("TEMPLATE_DEFAULT_LOCALE=%q: want a language tag such as en or zh-CN", c.Templates.DefaultLocale)
			}
		}},
	{Name: "TEMPLATE_LOCALE_FALLBACKS", Group: groupTemplates,
		Doc: "Extra template locale fallbacks, `from=to` pairs separated by `;`, e.g. " +
			"`zh-HK=zh-TW;zh-MO=zh-HK`: one fallback per locale, no loops. Checked when a process " +
			"starts.",
		parse: text(func(c *Config) *string { return &c.Templates.Fallbacks }),
		check: func(c Config, _ Role, bad complaint) {
			if _, err := templates.ParseFallbacks(c.Templates.Fallbacks); err != nil {
				bad("TEMPLATE_LOCALE_FALLBACKS: %v", err)
			}
		}},

	// Broadcasts and prices
	{Name: "BROADCAST_MIN_ACK_TIMEOUT", Group: groupBroadcasts, Default: "1m",
		Doc: "The shortest `ack_timeout` a broadcast may ask for before a person's next channel is " +
			"tried.",
		parse: duration(func(c *Config) *time.Duration { return &c.MinAckTimeout })},
	{Name: "PRICE_CURRENCY", Group: groupBroadcasts, Default: "USD",
		Doc:   "The currency of the prices below, as shown in a broadcast preview.",
		parse: text(func(c *Config) *string { return &c.Prices.Currency })},
	{Name: "PRICE_SMS_SEGMENT", Group: groupBroadcasts, Default: "0.0083",
		Doc:   "Price of one SMS segment, for the cost in a broadcast preview only.",
		parse: price(func(c *Config) *float64 { return &c.Prices.SMSSegment })},
	{Name: "PRICE_VOICE_MINUTE", Group: groupBroadcasts, Default: "0.014",
		Doc:   "Price of one billed minute of a call, for the preview.",
		parse: price(func(c *Config) *float64 { return &c.Prices.VoiceMinute })},
	{Name: "PRICE_WECHAT_MESSAGE", Group: groupBroadcasts, Default: "0",
		Doc:   "Price of one WeChat message, for the preview.",
		parse: price(func(c *Config) *float64 { return &c.Prices.WeChatMessage })},
	{Name: "PRICE_EMAIL_MESSAGE", Group: groupBroadcasts, Default: "0",
		Doc:   "Price of one email, for the preview.",
		parse: price(func(c *Config) *float64 { return &c.Prices.Email })},
}

// text stores the value as it is.
func text(field func(*Config) *string) func(*Config, string) error {
	return func(c *Config, v string) error {
		*field(c) = v
		return nil
	}
}

// list stores comma-separated items, without blanks.
func list(field func(*Config) *[]string) func(*Config, string) error {
	return func(c *Config, v string) error {
		var items []string
		for _, item := range strings.Split(v, ",") {
			if item = strings.TrimSpace(item); item != "" {
				items = append(items, item)
			}
		}
		*field(c) = items
		return nil
	}
}

// duration stores a positive duration: Go's form, or whole days ("30d").
func duration(field func(*Config) *time.Duration) func(*Config, string) error {
	return func(c *Config, v string) error {
		d, err := parseDuration(v)
		if err != nil || d <= 0 {
			return errors.New("want a positive duration such as 30s, 10m, 720h or 30d")
		}
		*field(c) = d
		return nil
	}
}

// durationOrOff stores a positive duration, or 0 for "off".
func durationOrOff(field func(*Config) *time.Duration) func(*Config, string) error {
	return func(c *Config, v string) error {
		if v == "off" {
			*field(c) = 0
			return nil
		}
		return duration(field)(c, v)
	}
}

// whole stores a positive whole number.
func whole(field func(*Config) *int) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return errors.New("want a positive whole number")
		}
		*field(c) = n
		return nil
	}
}

// perSecond stores a rate above 0 and at most most.
func perSecond(field func(*Config) *float64, most float64) func(*Config, string) error {
	return func(c *Config, v string) error {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || !(f > 0 && f <= most) {
			return fmt.Errorf("want a number above 0, at most %g (e.g. 1 or 0.5)", most)
		}
		*field(c) = f
		return nil
	}
}

// perDay stores a daily quota, 0 for none.
func perDay(field func(*Config) *int64) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return errors.New("want a whole number, 0 for no daily limit")
		}
		*field(c) = n
		return nil
	}
}

// price stores a price from 0 to 100.
func price(field func(*Config) *float64) func(*Config, string) error {
	return func(c *Config, v string) error {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || !(f >= 0 && f <= 100) {
			return errors.New("want a price such as 0.0083")
		}
		*field(c) = f
		return nil
	}
}

func isE164(v string) bool {
	n, err := phonenumbers.Parse(v, "")
	return err == nil && phonenumbers.IsValidNumber(n) && phonenumbers.Format(n, phonenumbers.E164) == v
}

func isHTTPURL(v string) bool {
	u, err := url.Parse(v)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

// checkRedisURL checks REDIS_URL as the Redis client will read it. Its
// errors never contain the URL, which may hold a password.
func checkRedisURL(v string, cluster bool) error {
	u, err := url.Parse(v)
	if err != nil {
		return errors.New("not a valid URL (percent-encode special characters in the user name and password)")
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix" {
		return errors.New("want redis://, rediss:// or unix://")
	}
	if cluster {
		_, err = redis.ParseClusterURL(v)
	} else {
		_, err = redis.ParseURL(v)
	}
	var uerr *url.Error
	if errors.As(err, &uerr) {
		return errors.New("not a valid URL (percent-encode special characters in the user name and password)")
	}
	return err
}
