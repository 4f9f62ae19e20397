//go:build dev

package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// TestAWeChatTemplateMessageOpensTheWebFormAnsweredInTheBrowser: a
// post-discharge check sent as a WeChat template message whose URL is the
// patient web form; a phone-sized headless Chromium opens the link from
// the message WeChat received, is told what is missing, answers in
// Chinese and is thanked; the response is completed; the link, opened
// again, says it was answered.
func TestAWeChatTemplateMessageOpensTheWebFormAnsweredInTheBrowser(t *testing.T) {
	d, chromium, shots, _ := browserTest(t)

	const openid = "oDevPatient000000000000007"
	started := apiJSON(t, d, "POST", "/v1/questionnaires/post_discharge/responses",
		`{"channel":"web","via":"wechat","locale":"zh-CN","to":{"wechat_openid":"`+openid+`"},
		  "wechat":{"kind":"template","template_id":"TPL-survey","data":{"first":"出院随访问卷","keyword1":"骨科"}}}`)
	id, _ := started["id"].(string)
	var link string
	waitFor(t, "the WeChat template message with the form's link", func() bool {
		for _, m := range d.wsim.SentTo(openid) {
			if m.Template && m.ErrCode == 0 && strings.Contains(m.URL, "/f/") {
				link = m.URL
				return true
			}
		}
		return false
	})
	if !strings.HasPrefix(link, d.api+"/f/") || link != started["form_url"] {
		t.Fatalf("the template message's URL %q is not the form's link %v", link, started["form_url"])
	}

	b := newBrowser(t, chromium, "", shots, 390, 844)
	b.do("open the link", chromedp.EmulateViewport(390, 844), chromedp.Navigate(link), chromedp.WaitVisible(chromedp.CSS("#submit")))
	if lang := b.attr("html", "lang"); lang != "zh-Hans" {
		t.Fatalf("the form's language is %q, want zh-Hans", lang)
	}
	if title := b.text("#title"); !strings.Contains(title, "出院") {
		t.Fatalf("the form's title: %q", title)
	}
	b.screenshot("form-01-opened")

	// Only the pain is given: the page says what is missing.
	b.do("answer the pain only and send",
		chromedp.SendKeys(chromedp.CSS("#i-pain"), "4"),
		chromedp.Click(chromedp.CSS("#submit")),
		chromedp.WaitVisible(chromedp.CSS("#problems")))
	if p := b.text("#problems"); !strings.Contains(p, "请选择一个答案") {
		t.Fatalf("the problems: %q", p)
	}
	if v := b.attr("#i-pain", "value"); v != "4" {
		t.Fatalf("the pain given (%q) was not kept", v)
	}
	b.screenshot("form-02-what-is-missing")

	// No fever (the temperature is skipped), wound fine, medication taken, no call.
	b.do("answer the rest and send",
		chromedp.Click(chromedp.CSS(`input[name=fever][value=N]`)),
		chromedp.Click(chromedp.CSS(`input[name=wound][value=Y]`)),
		chromedp.Click(chromedp.CSS(`input[name=medication][value=Y]`)),
		chromedp.Click(chromedp.CSS(`input[name=call][value=N]`)),
		chromedp.Click(chromedp.CSS("#submit")),
		chromedp.WaitVisible(chromedp.CSS("#done")))
	if thanks := b.text("#done"); !strings.Contains(thanks, "谢谢") {
		t.Fatalf("the thanks: %q", thanks)
	}
	b.screenshot("form-03-answered")

	r := apiJSON(t, d, "GET", "/v1/questionnaire-responses/"+id, "")
	got := map[string]string{}
	list, _ := r["answers"].([]any)
	for _, x := range list {
		a := x.(map[string]any)
		switch {
		case a["key"] != nil:
			got[a["question"].(string)] = a["key"].(string)
		case a["number"] != nil:
			got[a["question"].(string)] = "n"
		}
	}
	if r["state"] != "completed" || r["channel"] != "web" || len(got) != 5 || got["fever"] != "N" || got["call"] != "N" {
		t.Fatalf("the response after the form: %v", r)
	}

	// The link again: answered, never the questions.
	b.do("open the link again", chromedp.Navigate(link), chromedp.WaitVisible(chromedp.CSS("#done")))
	b.do("an unknown link", chromedp.Navigate(d.api+"/f/"+strings.Repeat("Q", 43)), chromedp.WaitVisible(chromedp.CSS("#notfound")))
	b.screenshot("form-04-unknown-link")
}

// apiJSON calls the API with dev's key and decodes the answer.
func apiJSON(t *testing.T, d *devGateway, method, path, body string) map[string]any {
	t.Helper()
	req, _ := http.NewRequest(method, d.api+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+d.key)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		t.Fatalf("%s %s = %d %s", method, path, resp.StatusCode, raw)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return out
}
