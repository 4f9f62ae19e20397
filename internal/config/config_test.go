package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

var good = map[string]string{
	"GATEWAY_PUBLIC_URL": "https://gw.example-clinic.test/",
	"GATEWAY_API_KEYS":   "clinic-a:aaaaaaaaaaaaaaaaaaaa, crisis_team:bbbbbbbbbbbbbbbbbbbb",
	"REDIS_URL":          "redis://127.0.0.1:6379/2",
	"TWILIO_ACCOUNT_SID": "AC0123456789abcdef0123456789abcdef",
	"TWILIO_AUTH_TOKEN":  "0123456789abcdef0123456789abcdef",
	"TWILIO_FROM":        "+14155550100",
}

func with(kv ...string) map[string]string {
	m := map[string]string{}
	for k, v := range good {
		m[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func TestAGoodConfigurationLoadsWithDefaults(t *testing.T) {
	c, err := Load(env(with("GATEWAY_RETENTION", "7d")))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(RoleAll); err != nil {
		t.Fatal(err)
	}
	if c.PublicURL != "https://gw.example-clinic.test" || c.Retention != 7*24*time.Hour || c.Addr != ":8080" {
		t.Fatalf("config %+v", c)
	}
	if c.APIKeys["aaaaaaaaaaaaaaaaaaaa"] != "clinic-a" || c.APIKeys["bbbbbbbbbbbbbbbbbbbb"] != "crisis_team" {
		t.Fatalf("keys %v", c.APIKeys)
	}
	if c.Twilio.APIURL != "https://api.twilio.com" || NewDefaultConfig().Retention != 30*24*time.Hour {
		t.Fatal("defaults")
	}
}

func TestBadSettingsAreNamedAtStartUp(t *testing.T) {
	cases := []struct {
		name    string
		env     map[string]string
		role    Role
		mention string
	}{
		{"no public URL", with("GATEWAY_PUBLIC_URL", ""), RoleAll, "GATEWAY_PUBLIC_URL is required"},
		{"a public URL with a path", with("GATEWAY_PUBLIC_URL", "https://x.test/gw"), RoleAll, "GATEWAY_PUBLIC_URL"},
		{"no API keys for the API", with("GATEWAY_API_KEYS", ""), RoleAPI, "GATEWAY_API_KEYS is required"},
		{"a short API key", with("GATEWAY_API_KEYS", "a:short"), RoleAPI, "shorter than 16"},
		{"an API key without tenant", with("GATEWAY_API_KEYS", "aaaaaaaaaaaaaaaaaaaa"), RoleAPI, "tenant:key"},
		{"a duplicate API key", with("GATEWAY_API_KEYS", "a:aaaaaaaaaaaaaaaaaaaa,b:aaaaaaaaaaaaaaaaaaaa"), RoleAPI, "twice"},
		{"a bad Redis URL", with("REDIS_URL", "http://x"), RoleAll, "REDIS_URL"},
		{"a bad retention", with("GATEWAY_RETENTION", "forever"), RoleAll, "GATEWAY_RETENTION"},
		{"a zero concurrency", with("WORKER_CONCURRENCY", "0"), RoleWorker, "WORKER_CONCURRENCY"},
		{"a From that is not E.164", with("TWILIO_FROM", "4155550100"), RoleWorker, "TWILIO_FROM"},
		{"no sender", with("TWILIO_FROM", ""), RoleWorker, "TWILIO_MESSAGING_SERVICE_SID"},
		{"a malformed account SID", with("TWILIO_ACCOUNT_SID", "nope"), RoleWorker, "TWILIO_ACCOUNT_SID"},
		{"no channel at all", map[string]string{"GATEWAY_PUBLIC_URL": "https://x.test", "GATEWAY_API_KEYS": good["GATEWAY_API_KEYS"]}, RoleAll, "no channel"},
		{"idempotency keys outliving their messages", with("GATEWAY_RETENTION", "2h"), RoleAPI, "GATEWAY_IDEMPOTENCY_TTL"},
		{"cluster and sentinel at once", with("REDIS_CLUSTER", "true", "REDIS_SENTINEL_MASTER", "m", "REDIS_SENTINEL_ADDRS", "127.0.0.1:26379"), RoleAll, "exclude"},
		{"a sentinel master without sentinels", with("REDIS_SENTINEL_MASTER", "m"), RoleAll, "REDIS_SENTINEL_ADDRS is required"},
		{"a REDIS_CLUSTER that is not a boolean", with("REDIS_CLUSTER", "maybe"), RoleAll, "REDIS_CLUSTER"},
		{"an unknown log level", with("LOG_LEVEL", "loud"), RoleAll, "LOG_LEVEL"},
		{"a collector that is not an http URL", with("OTEL_EXPORTER_OTLP_ENDPOINT", "otel-collector:4318"), RoleAll, "OTEL_EXPORTER_OTLP_ENDPOINT"},
		{"a collector with a query", with("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4318/?k=v"), RoleAll, "OTEL_EXPORTER_OTLP_ENDPOINT"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := Load(env(c.env))
			if err == nil {
				err = cfg.Validate(c.role)
			}
			if err == nil || !strings.Contains(err.Error(), c.mention) {
				t.Fatalf("error %v, want one mentioning %q", err, c.mention)
			}
			for _, secret := range []string{"0123456789abcdef0123456789abcdef", "aaaaaaaaaaaaaaaaaaaa"} {
				if strings.Contains(err.Error(), secret) {
					t.Fatalf("the error reveals a secret: %v", err)
				}
			}
		})
	}
}

func TestTheEnvironmentOverridesTheConfigFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gateway.env")
	_ = os.WriteFile(path, []byte("# clinic settings\nGATEWAY_ADDR=:9000\nLOG_LEVEL=\"debug\"\n"), 0o600)
	c, err := Load(env(with("GATEWAY_CONFIG_FILE", path, "LOG_LEVEL", "warn")))
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != ":9000" || c.LogLevel != "warn" {
		t.Fatalf("addr %q level %q", c.Addr, c.LogLevel)
	}
	_ = os.WriteFile(path, []byte("not a pair\n"), 0o600)
	if _, err := Load(env(with("GATEWAY_CONFIG_FILE", path))); err == nil || !strings.Contains(err.Error(), ":1") {
		t.Fatalf("a bad line must be named: %v", err)
	}
}
