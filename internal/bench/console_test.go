package bench

import (
	"context"
	"io"
	"net/http"
	"slices"
	"time"

	"github.com/patientmsg/gateway/internal/service/servicetest"
	"github.com/patientmsg/gateway/internal/users"
)

// consolePage is one console page's server time, measured from loopback.
type consolePage struct {
	name, path string
	// times are consoleTries requests' times; bytes the page's size.
	times []time.Duration
	bytes int
}

// consoleTries is how many times each page is requested.
const consoleTries = 5

// consolePages signs a lead in and times the console's pages while
// broadcast id (a large crisis broadcast, its answers counted) is in the
// store: the broadcasts, its roster and after-action report, the inbox,
// escalations, message log, senders, templates and follow-up plans.
func (e *env) consolePages(g *servicetest.Gateway, id string) []consolePage {
	ctx := context.Background()
	const email, password = "lead@bench-clinic.test", "bench-console-password-0123"
	if _, err := g.Service.Users.Add(ctx, users.NewUser{Tenant: tenant, Email: email, Name: "Lead", Role: users.RoleLead,
		Password: password}); err != nil {
		e.b.Fatal(err)
	}
	_, _, token, err := g.Service.Users.SignIn(ctx, email, password)
	if err != nil {
		e.b.Fatal(err)
	}
	pages := []consolePage{
		{name: "broadcasts", path: "/console/broadcasts"},
		{name: "the broadcast's roster", path: "/console/broadcasts/" + id},
		{name: "its after-action report", path: "/console/broadcasts/" + id + "/report"},
		{name: "inbox", path: "/console/inbox"},
		{name: "escalations", path: "/console/escalations"},
		{name: "message log", path: "/console/messages"},
		{name: "senders and queues", path: "/console/senders"},
		{name: "templates", path: "/console/templates"},
		{name: "follow-up plans", path: "/console/plans"},
	}
	client := &http.Client{Transport: e.http.Transport, Timeout: time.Minute,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for i := range pages {
		p := &pages[i]
		for range consoleTries {
			req, _ := http.NewRequest("GET", g.URL+p.path, nil)
			req.AddCookie(&http.Cookie{Name: "gw_session", Value: token})
			start := time.Now()
			resp, err := client.Do(req)
			if err != nil {
				e.b.Fatalf("GET %s: %v", p.path, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			p.times = append(p.times, time.Since(start))
			if resp.StatusCode != http.StatusOK {
				e.b.Fatalf("GET %s: HTTP %d: %.300s", p.path, resp.StatusCode, body)
			}
			p.bytes = len(body)
		}
	}
	return pages
}

// median and slowest of a page's times.
func (p consolePage) median() time.Duration {
	s := slices.Clone(p.times)
	slices.Sort(s)
	return s[len(s)/2]
}

func (p consolePage) slowest() time.Duration { return slices.Max(p.times) }
