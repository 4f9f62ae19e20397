package bench

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/channels/twilio/twiliosim"
	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/service/servicetest"
)

func BenchmarkZZSlowlog(b *testing.B) {
	e := newEnv(b)
	g := e.start(servicetest.Options{Role: config.RoleAll, Twilio: twiliosim.Options{NoRecord: true}})
	defer e.stopGateway(g)
	ctx := context.Background()
	n := 2000
	e.rdb.ConfigSet(ctx, "slowlog-max-len", "1000000")
	e.rdb.ConfigSet(ctx, "slowlog-log-slower-than", "0")
	e.rdb.SlowLogReset(ctx)
	ids := make([]string, n)
	parallel(n, httpClients, func(i int) error {
		id, err := e.post(g.URL, msgJSON)
		ids[i] = id
		return err
	})
	e.waitCallbacks(g, ids)
	time.Sleep(time.Second)
	e.rdb.ConfigSet(ctx, "slowlog-log-slower-than", "10000")
	logs, err := e.rdb.SlowLogGet(ctx, -1).Result()
	if err != nil {
		b.Fatal(err)
	}
	type agg struct {
		k     string
		n     int
		total time.Duration
	}
	m := map[string]*agg{}
	for _, l := range logs {
		k := ""
		if len(l.Args) > 0 {
			k = l.Args[0]
		}
		if (k == "evalsha" || k == "eval") && len(l.Args) > 3 {
			k += " " + keyKind(l.Args[3])
		} else if len(l.Args) > 1 {
			k += " " + keyKind(l.Args[1])
		}
		a := m[k]
		if a == nil {
			a = &agg{k: k}
			m[k] = a
		}
		a.n++
		a.total += l.Duration
	}
	var out []*agg
	for _, a := range m {
		out = append(out, a)
	}
	slices.SortFunc(out, func(x, y *agg) int { return int(y.total - x.total) })
	for i, a := range out {
		if i > 30 {
			break
		}
		fmt.Printf("%-70s %6.2f/msg %6.1fµs each %6.1fµs/msg\n", strings.TrimSpace(a.k), float64(a.n)/float64(n), float64(a.total.Microseconds())/float64(a.n), float64(a.total.Microseconds())/float64(n))
	}
}
