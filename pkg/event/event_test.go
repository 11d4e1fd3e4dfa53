package event

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// A receiver accepts exactly the body signed with its secret, at about
// the signed time; a second secret's signature is accepted too (rotation).
func TestVerify(t *testing.T) {
	secret := []byte("0123456789abcdef0123")
	body := []byte(`{"specversion":"1.0","id":"x"}`)
	now := time.Unix(1_800_000_000, 0)
	h := Sign(secret, now, body)
	if err := Verify(secret, h, body, now.Add(time.Minute), DefaultTolerance); err != nil {
		t.Fatalf("a good delivery: %v", err)
	}
	cases := []struct {
		name   string
		secret []byte
		header string
		body   string
		now    time.Time
		want   error
		msg    string
	}{
		{"changed body", secret, h, `{"specversion":"1.0","id":"y"}`, now, ErrBadSignature, ""},
		{"wrong secret", []byte("another-secret-0123"), h, string(body), now, ErrBadSignature, ""},
		{"replayed later", secret, h, string(body), now.Add(6 * time.Minute), ErrStale, ""},
		{"from the future", secret, h, string(body), now.Add(-6 * time.Minute), ErrStale, ""},
		{"no header", secret, "", string(body), now, ErrNoSignature, ""},
		{"no time", secret, "v1=" + strings.Split(h, "v1=")[1], string(body), now, nil, "malformed"},
		{"time swapped", secret, strings.Replace(h, "t=1800000000", "t=1800000001", 1), string(body), now, ErrBadSignature, ""},
	}
	for _, c := range cases {
		err := Verify(c.secret, c.header, []byte(c.body), c.now, DefaultTolerance)
		if err == nil || c.want != nil && !errors.Is(err, c.want) || c.msg != "" && !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	rotated := Sign([]byte("the-new-secret-0123456"), now, body) + ",v1=" + strings.Split(h, "v1=")[1]
	if err := Verify(secret, rotated, body, now, DefaultTolerance); err != nil {
		t.Errorf("two signatures, one by the receiver's secret: %v", err)
	}
}

func TestDecode(t *testing.T) {
	if _, err := Decode([]byte(`{"specversion":"0.3","id":"1","type":"t","source":"/s"}`)); err == nil {
		t.Error("CloudEvents 0.3 accepted")
	}
	e, err := Decode([]byte(`{"specversion":"1.0","id":"1","type":"dev.modelreg.stage.moved","source":"/s","data":{"repository":"team/a","stage":"production"}}`))
	if err != nil || e.Data.Stage != "production" {
		t.Fatal(e, err)
	}
}
