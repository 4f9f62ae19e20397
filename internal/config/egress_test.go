package config

import (
	"strings"
	"testing"
)

func TestWebhookAllowNetworks(t *testing.T) {
	cases := []struct {
		name    string
		value   string
		want    string // the networks, joined by commas, when accepted
		mention string // a part of the error when refused
	}{
		{"unset: public addresses only", "", "", ""},
		{"networks and a single address", "10.20.0.0/16, 192.168.5.7/32,fd00:1::/64", "10.20.0.0/16,192.168.5.7/32,fd00:1::/64", ""},
		{"an address without a length", "192.168.5.7", "192.168.5.7/32", ""},
		{"not a network", "10.20.0.0/16,intranet", "", `GATEWAY_WEBHOOK_ALLOW_NETWORKS: entry 2 "intranet"`},
		{"bits past the length", "10.20.1.0/16", "", "GATEWAY_WEBHOOK_ALLOW_NETWORKS: entry 1"},
		{"every IPv4 address", "0.0.0.0/0", "", "GATEWAY_WEBHOOK_ALLOW_NETWORKS: 0.0.0.0/0 is too wide"},
		{"every IPv6 address", "::/0", "", "GATEWAY_WEBHOOK_ALLOW_NETWORKS: ::/0 is too wide"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := Load(env(with("GATEWAY_WEBHOOK_ALLOW_NETWORKS", c.value)))
			if err == nil {
				err = cfg.Validate(RoleAll)
			}
			if c.mention != "" {
				if err == nil || !strings.Contains(err.Error(), c.mention) {
					t.Fatalf("error %v, want one mentioning %q", err, c.mention)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, n := range cfg.WebhookAllowNetworks {
				got = append(got, n.String())
			}
			if strings.Join(got, ",") != c.want {
				t.Fatalf("WebhookAllowNetworks = %v, want %s", got, c.want)
			}
		})
	}
}
