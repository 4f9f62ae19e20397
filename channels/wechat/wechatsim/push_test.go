package wechatsim_test

import (
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/channels/wechat/wechatsim"
)

// Known answers from WeChat's official message-crypto samples
// (WXBizMsgCrypt: the Java test's fixed-random encryption, the Python
// sample's compatible-mode text push).
const (
	sampleKey = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"

	sampleEncryptAppID  = "wxb11529c136998cb6"
	sampleEncryptRandom = "aaaabbbbccccdddd"
	sampleEncryptPlain  = "我是中文abcd123"
	sampleEncryptCipher = "jn1L23DB+6ELqJ+6bruv21Y6MD7KeIfP82D6gU39rmkgczbWwt5+3bnyg5K55bgVtVzd832WzZGMhkP72vVOfg=="

	samplePushToken     = "spamtest"
	samplePushAppID     = "wx2c2769f8efd9abc2"
	samplePushTimestamp = "1409735669"
	samplePushNonce     = "1320562132"
	samplePushSignature = "5d197aaffba7e9b25a30732f161a50dee96bd5fa"
	samplePushEncrypt   = "hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6F8PGHQHFVAFmOD2LdJF9FrXpbUAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZkyyXwon8T332jisa+h6tEDYsVticbSnyU8dKOIbgU6ux5VTjg3yt+WGzjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCgavjIQ6X8tCOp3yZbGpy0VxpAe+77TszTfRd5RJSVO/HTnifJpXgCSUdUue1v6h0EIBYYI1BD1DlD+C0CR8e6OewpusjZ4uBl9FyJvnhvQl+q5rv1ixrcpCumEPo5MJSgM9ehVsNPfUM669WuMyVWQLCzpu9GhglF2PE="
	samplePushPlain     = "<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName>\n<FromUserName><![CDATA[oyORnuP8q7ou2gfYjqLzSIWZf0rs]]></FromUserName>\n<CreateTime>1409735668</CreateTime>\n<MsgType><![CDATA[text]]></MsgType>\n<Content><![CDATA[abcdteT]]></Content>\n<MsgId>6054768590064713728</MsgId>\n</xml>"
)

func TestPusherCryptoMatchesWeChatsSamples(t *testing.T) {
	p := wechatsim.Pusher{EncodingAESKey: sampleKey, AppID: sampleEncryptAppID, Random: []byte(sampleEncryptRandom)}
	enc, err := p.Encrypt([]byte(sampleEncryptPlain))
	if err != nil || enc != sampleEncryptCipher {
		t.Fatalf("Encrypt = %q, %v; want WeChat's %q", enc, err, sampleEncryptCipher)
	}
	if got, err := p.Decrypt(enc); err != nil || string(got) != sampleEncryptPlain {
		t.Fatalf("Decrypt = %q, %v", got, err)
	}

	if sig := wechatsim.Signature(samplePushToken, samplePushTimestamp, samplePushNonce, samplePushEncrypt); sig != samplePushSignature {
		t.Fatalf("msg_signature %s, want WeChat's %s", sig, samplePushSignature)
	}
	p = wechatsim.Pusher{Token: samplePushToken, EncodingAESKey: sampleKey, AppID: samplePushAppID}
	if got, err := p.Decrypt(samplePushEncrypt); err != nil || string(got) != samplePushPlain {
		t.Fatalf("Decrypt = %q, %v; want WeChat's sample push", got, err)
	}
	p.AppID = "wx0000000000000000"
	if _, err := p.Decrypt(samplePushEncrypt); err == nil || !strings.Contains(err.Error(), "app id") {
		t.Fatalf("a ciphertext sealed for another app id: %v, want refused", err)
	}
}

func TestPusherRepliesRoundTrip(t *testing.T) {
	p := wechatsim.Pusher{Token: "tok", EncodingAESKey: sampleKey, AppID: "wxapp"}
	q, body, err := p.Push(wechatsim.TextMessage("gh_1", "oUser", "hi", 1, time.Unix(1_700_000_000, 0)), "oUser")
	if err != nil {
		t.Fatal(err)
	}
	if q.Get("encrypt_type") != "aes" || q.Get("msg_signature") == "" || !strings.Contains(string(body), "<Encrypt>") {
		t.Fatalf("safe-mode push: %v %s", q, body)
	}
	if r, err := p.OpenReply([]byte("success")); err != nil || r.XML != nil {
		t.Fatalf("success: %+v, %v", r, err)
	}
	if _, err := p.OpenReply([]byte("<xml><Content>plain</Content></xml>")); err == nil {
		t.Fatal("a plaintext reply in safe mode must be refused")
	}
}
