package config

import (
	"strings"
	"testing"
)

func TestAdmissionSettings(t *testing.T) {
	def := NewDefaultConfig().Admission
	cases := []struct {
		name string
		env  map[string]string
		want AdmissionConfig
	}{
		{"the defaults: 100 requests/s with a burst of 200, 4 h of backlog, guard at 80/90/97 %", with(), def},
		{"a rate without a burst", with("GATEWAY_TENANT_RATE_LIMIT", "50"),
			AdmissionConfig{TenantRate: RateLimit{PerSecond: 50}, BacklogHours: 4, MemoryGuard: def.MemoryGuard}},
		{"a rate with a burst, and overrides", with("GATEWAY_TENANT_RATE_LIMIT", "0.5:3", "GATEWAY_TENANT_RATE_LIMITS", " clinic-a=50, clinic-b=500:1000,lab=off "),
			AdmissionConfig{TenantRate: RateLimit{PerSecond: 0.5, Burst: 3}, TenantRates: map[string]RateLimit{
				"clinic-a": {PerSecond: 50}, "clinic-b": {PerSecond: 500, Burst: 1000}, "lab": {}}, BacklogHours: 4, MemoryGuard: def.MemoryGuard}},
		{"everything off", with("GATEWAY_TENANT_RATE_LIMIT", "off", "GATEWAY_TENANT_BACKLOG_HOURS", "0", "GATEWAY_REDIS_MEMORY_GUARD", "off"),
			AdmissionConfig{}},
		{"half an hour of backlog and a guard of our own", with("GATEWAY_TENANT_BACKLOG_HOURS", "0.5", "GATEWAY_REDIS_MEMORY_GUARD", "70,85%,95"),
			AdmissionConfig{TenantRate: def.TenantRate, BacklogHours: 0.5, MemoryGuard: MemoryGuard{Bulk: 0.70, Routine: 0.85, Urgent: 0.95}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(env(tc.env))
			if err == nil {
				err = c.Validate(RoleAll)
			}
			if err != nil {
				t.Fatal(err)
			}
			got := c.Admission
			if got.TenantRate != tc.want.TenantRate || got.BacklogHours != tc.want.BacklogHours || got.MemoryGuard != tc.want.MemoryGuard ||
				len(got.TenantRates) != len(tc.want.TenantRates) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			for k, v := range tc.want.TenantRates {
				if got.TenantRates[k] != v {
					t.Fatalf("tenant %s: %+v, want %+v", k, got.TenantRates[k], v)
				}
			}
		})
	}
}

func TestBadAdmissionSettingsAreNamed(t *testing.T) {
	cases := []struct {
		name, key, value string
	}{
		{"a rate that is not a number", "GATEWAY_TENANT_RATE_LIMIT", "fast"},
		{"a zero rate (off says off)", "GATEWAY_TENANT_RATE_LIMIT", "0"},
		{"a fractional burst", "GATEWAY_TENANT_RATE_LIMIT", "10:2.5"},
		{"an override without a tenant", "GATEWAY_TENANT_RATE_LIMITS", "=50"},
		{"an override of a bad tenant name", "GATEWAY_TENANT_RATE_LIMITS", "clinic a=50"},
		{"a tenant given twice", "GATEWAY_TENANT_RATE_LIMITS", "a=5,a=6"},
		{"an override with a bad rate", "GATEWAY_TENANT_RATE_LIMITS", "a=-5"},
		{"negative backlog hours", "GATEWAY_TENANT_BACKLOG_HOURS", "-1"},
		{"more than a week of backlog", "GATEWAY_TENANT_BACKLOG_HOURS", "200"},
		{"two thresholds", "GATEWAY_REDIS_MEMORY_GUARD", "80,90"},
		{"thresholds that fall", "GATEWAY_REDIS_MEMORY_GUARD", "90,80,97"},
		{"a threshold above 100 %", "GATEWAY_REDIS_MEMORY_GUARD", "80,90,120"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(env(with(tc.key, tc.value)))
			if err == nil {
				err = c.Validate(RoleAll)
			}
			if err == nil || !strings.Contains(err.Error(), tc.key) {
				t.Fatalf("error %v, want one naming %s", err, tc.key)
			}
		})
	}
	c := NewDefaultConfig()
	c.Admission.MemoryGuard = MemoryGuard{Bulk: 0.95, Routine: 0.9, Urgent: 0.97}
	if err := c.Validate(RoleAPI); err == nil || !strings.Contains(err.Error(), "GATEWAY_REDIS_MEMORY_GUARD") {
		t.Fatalf("Validate must check a guard set in code: %v", err)
	}
}
