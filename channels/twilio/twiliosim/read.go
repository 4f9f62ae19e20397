package twiliosim

import (
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The Messages API's read side, as Twilio serves it: GET
// /Messages/{Sid}.json fetches one message, GET /Messages.json lists the
// account's messages newest first, filtered by To, From and DateSent
// (DateSent=YYYY-MM-DD, DateSent>=…, DateSent<=…, dates or RFC 3339
// moments), a page of
// PageSize (at most 1000) at a time. A message's status there is its
// latest: the final status it reached whether or not its status
// callbacks were delivered, so a client that lost a callback can ask.
// Kept only without Options.NoRecord.

// stored is an accepted message as the read side shows it.
type stored struct {
	res     messageResource
	created time.Time
}

// remember keeps an accepted message with the status it will end at.
func (s *Server) remember(res messageResource, now time.Time, final string, finalCode int) {
	if s.noRecord {
		return
	}
	res.Status = final
	if final == "" {
		res.Status = StatusDelivered
	}
	sent := now.Format(time.RFC1123Z)
	res.DateSent = &sent
	if finalCode != 0 && (res.Status == StatusUndelivered || res.Status == StatusFailed) {
		code := finalCode
		res.ErrorCode = &code
	}
	s.mu.Lock()
	if s.messages == nil {
		s.messages = map[string]*stored{}
	}
	s.messages[res.SID] = &stored{res: res, created: now}
	s.mu.Unlock()
}

// readable checks a read request's method, credentials and account.
func (s *Server) readable(w http.ResponseWriter, r *http.Request) bool {
	if !s.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Basic realm="Twilio API"`)
		s.reject(w, r, nil, http.StatusUnauthorized, CodeAuthenticate, "Authenticate", "")
		return false
	}
	if r.PathValue("AccountSid") != s.accountSID {
		s.reject(w, r, nil, http.StatusNotFound, CodeNotFound, "The requested resource "+r.URL.Path+" was not found", "")
		return false
	}
	return true
}

// fetchedSID checks a fetch of one resource (GET, the account's
// credentials and path) and returns the SID its path names.
func (s *Server) fetchedSID(w http.ResponseWriter, r *http.Request) (string, bool) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		s.reject(w, r, nil, http.StatusMethodNotAllowed, CodeMethodNotAllowed, "Method not allowed", "")
		return "", false
	}
	if !s.readable(w, r) {
		return "", false
	}
	return strings.TrimSuffix(r.PathValue("file"), ".json"), true
}

// handleFetch implements GET /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json.
func (s *Server) handleFetch(w http.ResponseWriter, r *http.Request) {
	sid, ok := s.fetchedSID(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	m, ok := s.messages[sid]
	var res messageResource
	if ok {
		res = m.res
	}
	s.fetches++
	s.mu.Unlock()
	if !ok {
		s.reject(w, r, nil, http.StatusNotFound, CodeNotFound, "The requested resource "+r.URL.Path+" was not found", "")
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// messagePage is a page of Twilio's message list.
type messagePage struct {
	Messages        []messageResource `json:"messages"`
	End             int               `json:"end"`
	FirstPageURI    string            `json:"first_page_uri"`
	NextPageURI     *string           `json:"next_page_uri"`
	Page            int               `json:"page"`
	PageSize        int               `json:"page_size"`
	PreviousPageURI *string           `json:"previous_page_uri"`
	Start           int               `json:"start"`
	URI             string            `json:"uri"`
}

// handleList implements GET /2010-04-01/Accounts/{AccountSid}/Messages.json.
func (s *Server) handleList(w http.ResponseWriter, r *http.Request) {
	if !s.readable(w, r) {
		return
	}
	q := r.URL.Query()
	size := 50
	if v, err := strconv.Atoi(q.Get("PageSize")); err == nil && v > 0 {
		size = min(v, 1000)
	}
	// A GMT date (YYYY-MM-DD), or a moment in RFC 3339 as twilio-go
	// writes it.
	day := func(key string) (time.Time, bool, bool) {
		v := q.Get(key)
		if v == "" {
			return time.Time{}, false, true
		}
		if t, err := time.Parse("2006-01-02", v); err == nil {
			return t, true, true
		}
		t, err := time.Parse(time.RFC3339, v)
		return t.UTC(), true, err == nil
	}
	on, hasOn, ok1 := day("DateSent")
	after, hasAfter, ok2 := day("DateSent>")
	before, hasBefore, ok3 := day("DateSent<")
	if !ok1 || !ok2 || !ok3 {
		s.reject(w, r, nil, http.StatusBadRequest, CodeBadRequest, "Invalid DateSent", "")
		return
	}
	s.mu.Lock()
	var list []*stored
	for _, m := range s.messages {
		d := m.created.UTC()
		switch {
		case q.Get("To") != "" && m.res.To != q.Get("To"),
			q.Get("From") != "" && (m.res.From == nil || *m.res.From != q.Get("From")),
			hasOn && !d.Truncate(24*time.Hour).Equal(on.Truncate(24*time.Hour)), hasAfter && d.Before(after), hasBefore && d.After(before):
			continue
		}
		list = append(list, m)
	}
	s.lists++
	s.mu.Unlock()
	sort.Slice(list, func(i, j int) bool { return list[i].created.After(list[j].created) })
	uri := r.URL.RequestURI()
	page := messagePage{Messages: []messageResource{}, FirstPageURI: uri, PageSize: size, URI: uri}
	for i, m := range list {
		if i == size {
			break // one page: the gateway asks for as many as it needs
		}
		page.Messages = append(page.Messages, m.res)
	}
	page.End = max(len(page.Messages)-1, 0)
	writeJSON(w, http.StatusOK, page)
}

// Lookups counts the read requests answered 200: fetches of one message and
// lists.
func (s *Server) Lookups() (fetches, lists int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fetches, s.lists
}
