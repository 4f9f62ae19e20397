package wechat

import (
	"bytes"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/silenceper/wechat/v2/util"

	"github.com/patientmsg/gateway/channels/wechat/wechatsim"
)

const (
	fuzzToken = "pmgwPushToken2026"
	fuzzKey   = "TJQS9/pEyOkFctH3KIcnLdmY6j6As6V1+VEHkVRsKT8"
	fuzzAppID = "wx5f1e2d3c4b5a6978"
)

// The reply encryption (silenceper's) reproduces WeChat's own sample
// ciphertext (the Java WXBizMsgCrypt test, fixed random).
func TestReplyEncryptionMatchesWeChatsSample(t *testing.T) {
	key, err := decodeAESKey("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG")
	if err != nil {
		t.Fatal(err)
	}
	got := base64.StdEncoding.EncodeToString(util.AESEncryptMsg([]byte("aaaabbbbccccdddd"), []byte("我是中文abcd123"), "wxb11529c136998cb6", key))
	if want := "jn1L23DB+6ELqJ+6bruv21Y6MD7KeIfP82D6gU39rmkgczbWwt5+3bnyg5K55bgVtVzd832WzZGMhkP72vVOfg=="; got != want {
		t.Fatalf("ciphertext %s, want WeChat's %s", got, want)
	}
}

func TestDecodeAESKey(t *testing.T) {
	for _, bad := range []string{"", "short", fuzzKey + "A", "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"} {
		if _, err := decodeAESKey(bad); err == nil {
			t.Errorf("decodeAESKey(%q) accepted", bad)
		}
	}
}

// sealedRequest turns a sealed reply envelope into the query and body of a
// safe-mode push carrying the same ciphertext.
func sealedRequest(t testing.TB, envelope []byte) (url.Values, []byte) {
	var env struct {
		Encrypt, MsgSignature, TimeStamp, Nonce string
	}
	if err := xml.Unmarshal(envelope, &env); err != nil {
		t.Fatalf("sealed envelope %q: %v", envelope, err)
	}
	q := url.Values{"timestamp": {env.TimeStamp}, "nonce": {env.Nonce}, "msg_signature": {env.MsgSignature}, "encrypt_type": {"aes"}}
	return q, []byte("<xml><ToUserName><![CDATA[gh_1]]></ToUserName><Encrypt><![CDATA[" + env.Encrypt + "]]></Encrypt></xml>")
}

// FuzzSafeModeEnvelope feeds the safe-mode path arbitrary queries and
// bodies. It must never panic; whatever it opens must carry a valid
// msg_signature; a signed but arbitrary ciphertext must fail cleanly; and
// what sealReply seals (the passive reply) opens back to the same bytes,
// also with the independent decryption of wechatsim.
func FuzzSafeModeEnvelope(f *testing.F) {
	key, err := decodeAESKey(fuzzKey)
	if err != nil {
		f.Fatal(err)
	}
	p := wechatsim.Pusher{Token: fuzzToken, EncodingAESKey: fuzzKey, AppID: fuzzAppID, Now: func() time.Time { return time.Unix(1_773_153_000, 0) }}
	seed := func(plain []byte) {
		q, body, err := p.Push(plain, "oUser")
		if err != nil {
			f.Fatal(err)
		}
		f.Add(q.Encode(), body)
	}
	seed(wechatsim.TextMessage("gh_1", "oUser", "退订", 1, time.Unix(1_773_153_000, 0)))
	seed(wechatsim.Event("gh_1", "oUser", "unsubscribe", "", time.Unix(1_773_153_000, 0)))
	seed(nil)
	f.Add("timestamp=1&nonce=2&msg_signature=x", []byte("<xml><Encrypt>AAAA</Encrypt></xml>"))
	f.Add("", []byte("<xml><Encrypt><![CDATA[!!]]></Encrypt></xml>"))
	f.Fuzz(func(t *testing.T, query string, body []byte) {
		q, _ := url.ParseQuery(query)
		ts, nonce := q.Get("timestamp"), q.Get("nonce")
		plain, err := openSafe(fuzzToken, fuzzAppID, key, ts, nonce, q.Get("msg_signature"), body)
		var env struct {
			XMLName xml.Name
			Encrypt string `xml:"Encrypt"`
		}
		if xml.Unmarshal(body, &env) != nil || env.XMLName.Local != "xml" {
			env.Encrypt = "" // not an envelope
		}
		if err == nil && !validSignature(q.Get("msg_signature"), fuzzToken, ts, nonce, env.Encrypt) {
			t.Fatalf("opened a push whose msg_signature is wrong")
		}
		if err == nil {
			_, _ = ParsePush(plain)
		}
		// The same ciphertext, correctly signed: decryption of arbitrary
		// bytes must fail cleanly or succeed for our app id only.
		if env.Encrypt != "" {
			sig := util.Signature(fuzzToken, ts, nonce, env.Encrypt)
			plain2, err := openSafe(fuzzToken, fuzzAppID, key, ts, nonce, sig, body)
			if errors.Is(err, errForged) {
				t.Fatalf("a correctly signed envelope was taken for a forgery")
			}
			if err == nil {
				if got, derr := p.Decrypt(env.Encrypt); derr != nil || !bytes.Equal(got, plain2) {
					t.Fatalf("opened %q, wechatsim reads %q (%v)", plain2, got, derr)
				}
			}
		}
		// Round trip of the reply path with body as the plaintext.
		// (The nonce is the push's, signed by WeChat: digits.)
		sealed, err := sealReply(fuzzToken, fuzzAppID, key, body, time.Unix(1_773_153_000, 0), "1320562132")
		if err != nil {
			t.Fatalf("sealReply: %v", err)
		}
		rq, rbody := sealedRequest(t, sealed)
		back, err := openSafe(fuzzToken, fuzzAppID, key, rq.Get("timestamp"), rq.Get("nonce"), rq.Get("msg_signature"), rbody)
		if err != nil || !bytes.Equal(back, body) {
			t.Fatalf("round trip: %q, %v; want %q", back, err, body)
		}
		reply, err := p.OpenReply(sealed)
		if ack := bytes.TrimSpace(body); len(ack) > 0 && string(ack) != "success" && (err != nil || !bytes.Equal(reply.XML, body)) {
			t.Fatalf("wechatsim cannot open the reply: %+v, %v", reply, err)
		}
	})
}
