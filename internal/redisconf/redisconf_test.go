package redisconf_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/patientmsg/gateway/internal/redisconf"
	"github.com/patientmsg/gateway/internal/redistest"
)

func TestTheGatewayWarnsOfARedisBelowTheSettingsItIsSizedFor(t *testing.T) {
	rs := redistest.StartWithArgs(t) // a redis-server process: CONFIG works
	rdb := rs.Client()
	ctx := context.Background()
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	redisconf.Check(ctx, rdb, log)
	if logs.Len() != 0 {
		t.Fatalf("a Redis with the settings was warned about:\n%s", logs.String())
	}
	for _, s := range redisconf.Settings {
		if got := rdb.ConfigGet(ctx, s.Name).Val()[s.Name]; got != s.Value {
			t.Fatalf("the test Redis runs with %s %q, want %s", s.Name, got, s.Value)
		}
	}
	if err := rdb.ConfigSet(ctx, "hash-max-listpack-value", "64").Err(); err != nil {
		t.Fatal(err)
	}
	redisconf.Check(ctx, rdb, log)
	if !strings.Contains(logs.String(), "hash-max-listpack-value") || !strings.Contains(logs.String(), "level=WARN") {
		t.Fatalf("a Redis at the default was not warned about:\n%s", logs.String())
	}
}

func TestArgsAreTheSettingsAsCommandLineOptions(t *testing.T) {
	args := redisconf.Args()
	if len(args) != 2*len(redisconf.Settings) || args[0] != "--"+redisconf.Settings[0].Name || args[1] != redisconf.Settings[0].Value {
		t.Fatalf("Args() = %v", args)
	}
}
