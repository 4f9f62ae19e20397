package config

import (
	"strings"
	"testing"
)

func TestTheOpsListenerSettings(t *testing.T) {
	const hash = "$2a$12$Af5CSWtfe0oOijN7D.iAXurxmNNAVB0J8CgP9wN7kiZr1OdY8ha0K"
	cases := []struct {
		name     string
		env      map[string]string
		addr     string
		users    int
		readOnly bool
		problem  string
	}{
		{"every process listens on :8081 by default, the dashboard read-only", nil, ":8081", 0, true, ""},
		{"the former name still sets the address", map[string]string{"GATEWAY_HEALTH_ADDR": "127.0.0.1:9100"}, "127.0.0.1:9100", 0, true, ""},
		{"the new name wins over the former", map[string]string{"GATEWAY_HEALTH_ADDR": ":9100", "GATEWAY_OPS_ADDR": ":9200"}, ":9200", 0, true, ""},
		{"off turns it off, under either name", map[string]string{"GATEWAY_HEALTH_ADDR": "off"}, "", 0, true, ""},
		{"operators with bcrypt hashes", map[string]string{"GATEWAY_OPS_USERS": "alice:" + hash + ", bob:" + hash, "GATEWAY_OPS_READ_ONLY": "no"}, ":8081", 2, false, ""},
		{"a password in clear is refused, naming the entry but not repeating it", map[string]string{"GATEWAY_OPS_USERS": "alice:hunter2-but-longer"}, "", 0, true, "entry 1 (alice): want a bcrypt hash"},
		{"an operator named twice is refused", map[string]string{"GATEWAY_OPS_USERS": "alice:" + hash + ",alice:" + hash}, "", 0, true, "alice is named twice"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := Load(func(k string) string { return c.env[k] })
			if c.problem != "" {
				if err == nil || !strings.Contains(err.Error(), c.problem) {
					t.Fatalf("err = %v, want one saying %q", err, c.problem)
				}
				if strings.Contains(err.Error(), "hunter2") {
					t.Errorf("the error repeats the value: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.OpsAddr != c.addr || len(cfg.OpsUsers) != c.users || cfg.OpsReadOnly != c.readOnly {
				t.Errorf("addr %q, %d users, read-only %v; want %q, %d, %v", cfg.OpsAddr, len(cfg.OpsUsers), cfg.OpsReadOnly, c.addr, c.users, c.readOnly)
			}
		})
	}
}
