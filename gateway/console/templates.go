package console

import (
	"github.com/patientmsg/gateway/internal/incidents"

	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"maps"
	"math"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/patientmsg/gateway/internal/broadcasts"
	"github.com/patientmsg/gateway/internal/users"
)

// pageData is what every page's template gets.
type pageData struct {
	// Title is the page title's catalogue key.
	Title string
	// Nav names the navigation entry to mark as current.
	Nav  string
	User *users.User
	// CSRF is the session's token, posted back by every form.
	CSRF string
	Lang string
	// Zone is the tenant's time zone, for the times shown.
	Zone *time.Location
	Data any
}

// Can says whether the signed-in account may send broadcasts, acknowledge
// escalations, record consent, answer a patient or cancel a plan (for showing the
// buttons; the routes check).
func (d pageData) Can(what string) bool {
	if d.User == nil {
		return false
	}
	switch what {
	case "send":
		return d.User.Role.Can(users.SendBroadcasts)
	case "ack":
		return d.User.Role.Can(users.AcknowledgeEscalations)
	case "consent":
		return d.User.Role.Can(users.RecordConsent)
	case "answer":
		return d.User.Role.Can(users.AnswerPatients)
	case "plans":
		return d.User.Role.Can(users.CancelPlans)
	case "templates":
		return d.User.Role.Can(users.EditTemplates)
	}
	return false
}

// When formats a time in the tenant's zone.
func (d pageData) When(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	z := d.Zone
	if z == nil {
		z = time.UTC
	}
	return t.In(z).Format("2006-01-02 15:04:05 MST")
}

// catalogue is one language's strings: key → text (a fmt format for tf).
type catalogue map[string]string

func loadCatalogues() (map[string]catalogue, error) {
	out := map[string]catalogue{}
	for _, loc := range users.Locales {
		b, err := fs.ReadFile(files, "i18n/"+loc+".json")
		if err != nil {
			return nil, fmt.Errorf("console: catalogue %s: %w", loc, err)
		}
		var cat catalogue
		if err := json.Unmarshal(b, &cat); err != nil {
			return nil, fmt.Errorf("console: catalogue %s: %w", loc, err)
		}
		out[loc] = cat
	}
	return out, nil
}

// pageTemplate is one page, parsed with the layout for one language.
type pageTemplate struct{ t *template.Template }

func (p *pageTemplate) execute(w io.Writer, d pageData) error {
	return p.t.ExecuteTemplate(w, "layout", d)
}

// fragment executes one named template of the page (the live roster).
func (p *pageTemplate) fragment(w io.Writer, name string, d pageData) error {
	return p.t.ExecuteTemplate(w, name, d)
}

// pageNames are the console's pages: templates/<name>.html each.
var pageNames = []string{"signin", "broadcasts", "compose", "confirm", "roster", "escalations", "inbox", "messages", "message", "contacts", "senders", "conversation", "report", "optouts", "plans", "plan", "tpls", "tpl", "incidents", "incident", "incident_report", "questionnaires", "questionnaire", "response", "history", "error"}

// loadPages parses every page with the layout, once per language, with
// t and tf bound to that language's catalogue.
func loadPages() (map[string]map[string]*pageTemplate, error) {
	cats, err := loadCatalogues()
	if err != nil {
		return nil, err
	}
	out := map[string]map[string]*pageTemplate{}
	for loc, cat := range cats {
		out[loc] = map[string]*pageTemplate{}
		base, err := template.New("layout").Funcs(funcs(cat)).ParseFS(files, "templates/layout.html")
		if err != nil {
			return nil, err
		}
		for _, name := range pageNames {
			b, err := template.Must(base.Clone()).ParseFS(files, path.Join("templates", name+".html"))
			if err != nil {
				return nil, fmt.Errorf("console: page %s: %w", name, err)
			}
			out[loc][name] = &pageTemplate{t: b}
		}
	}
	return out, nil
}

// missing marks a catalogue key that has no text (a test finds them).
const missing = "‹missing:"

func funcs(cat catalogue) template.FuncMap {
	t := func(key string) string {
		if s, ok := cat[key]; ok {
			return s
		}
		return missing + key + "›"
	}
	return template.FuncMap{
		"t": t,
		"tf": func(key string, args ...any) string {
			return fmt.Sprintf(t(key), args...)
		},
		// tOr is the text of key, or fallback when the catalogue has none
		// (a poll meaning a tenant chose, such as "evacuated").
		"tOr": func(key, fallback string) string {
			if s, ok := cat[key]; ok {
				return s
			}
			return fallback
		},
		"pct": func(n, total int64) string {
			if total <= 0 {
				return "0%"
			}
			return strconv.FormatFloat(math.Round(1000*float64(n)/float64(total))/10, 'f', -1, 64) + "%"
		},
		"pctWidth": func(n, total int64) string {
			if total <= 0 {
				return "0"
			}
			return strconv.Itoa(int(math.Round(100 * float64(n) / float64(total))))
		},
		"money": func(amount float64, currency string) string {
			return strings.TrimSpace(currency + " " + strconv.FormatFloat(amount, 'f', 2, 64))
		},
		"group":   func(n int) string { return group(int64(n)) },
		"group64": group,
		"cadence": incidents.FormatCadence,
		// broadcastTable is the list of broadcasts with their counts (the
		// broadcasts page's, an incident's), in a page.
		"broadcastTable": func(page pageData, id, caption string, rows []broadcastRow) broadcastTable {
			return broadcastTable{Page: page, ID: id, Caption: caption, Rows: rows}
		},
		"add":   func(a, b int) int { return a + b },
		"int64": func(n int) int64 { return int64(n) },
		// counts are a map's non-zero counts by key, in key order.
		"counts": func(m map[string]int64) []count {
			out := []count{}
			for _, k := range slices.Sorted(maps.Keys(m)) {
				if m[k] != 0 {
					out = append(out, count{k, m[k]})
				}
			}
			return out
		},
		// states are the person states, in the order people go through them.
		"states": func() []string { return broadcasts.PersonStates },
		"join":   strings.Join,
		"rate":   rate,
		// reportChart is an after-action report's timeline as inline SVG.
		"reportChart": func(d reportData) template.HTML { return d.Chart(t).SVG() },
		// scoreChart is a patient's scores over time as inline SVG.
		"scoreChart": func(d historyData) template.HTML { return d.Chart(t).SVG() },
	}
}

// count is a key's count.
type count struct {
	Key string
	N   int64
}

// group writes a count with thousands separators (12,392).
func group(n int64) string {
	s := strconv.FormatInt(n, 10)
	if n < 0 {
		return "-" + group(-n)
	}
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	return b.String()
}
