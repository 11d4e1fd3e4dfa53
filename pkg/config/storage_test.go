package config

import (
	"strings"
	"testing"
)

func TestStoragePassedThrough(t *testing.T) {
	c, err := Parse([]byte(`
storage:
  s3:
    bucket: models
    region: us-east-1
    regionendpoint: http://127.0.0.1:8333
    forcepathstyle: true
    chunksize: 5242880
  redirect:
    disable: false
  cache:
    blobdescriptor: redis
  delete:
    enabled: true
middleware:
  storage:
    - name: redirect
      options:
        baseurl: https://cdn.example.com/
replicas: true
uploadSecret: /etc/modelreg/upload-secret
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Storage.Driver() != "s3" || c.Storage["s3"]["bucket"] != "models" || c.Storage["s3"]["chunksize"] != 5242880 || c.Storage["s3"]["forcepathstyle"] != true {
		t.Errorf("storage: %#v", c.Storage)
	}
	if c.Storage["redirect"]["disable"] != false {
		t.Errorf("redirect: %#v", c.Storage["redirect"])
	}
	if m := c.Middleware["storage"]; len(m) != 1 || m[0].Name != "redirect" || m[0].Options["baseurl"] != "https://cdn.example.com/" {
		t.Errorf("middleware: %#v", c.Middleware)
	}
	if !c.Shared() || c.UploadSecret != "/etc/modelreg/upload-secret" {
		t.Errorf("replicas: %v %q", c.Shared(), c.UploadSecret)
	}

	// The short form distribution accepts: a driver without parameters.
	if c, err := Parse([]byte("storage: inmemory\n")); err != nil || c.Storage.Driver() != "inmemory" {
		t.Errorf("storage: inmemory: %v %#v", err, c)
	}
	if c, err := Parse(nil); err != nil || c.Storage != nil || c.Storage.Driver() != "" || c.Shared() {
		t.Errorf("empty: %v %#v", err, c)
	}
}

func TestStorageRefused(t *testing.T) {
	for _, tc := range []struct{ conf, want string }{
		{"storage:\n  s3: {bucket: a}\n  filesystem: {rootdirectory: /x}\n", "exactly one storage"},
		{"storage:\n  delete: {enabled: true}\n", "names no driver"},
		{"storage:\n  s3: {bucket: a}\n  cache: {blobdescriptor: inmemory}\nreplicas: true\nuploadSecret: /s\n", "inmemory is per process"},
		{"replicas: true\nuploadSecret: /s\n", "needs a storage every replica reaches"},
		{"storage:\n  s3: {bucket: a}\nreplicas: true\n", "needs uploadSecret"},
		{"middleware:\n  registry:\n    - name: x\n", "storage middleware only"},
		{"middleware:\n  storage:\n    - options: {baseurl: x}\n", "name is required"},
		{"middleware:\n  storage:\n    - name: redirect\n      option: {baseurl: x}\n", "field option not found"},
	} {
		_, err := Parse([]byte(tc.conf))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error with %q", tc.conf, err, tc.want)
		}
	}
	// One replica may keep the in-memory cache (the default).
	if _, err := Parse([]byte("storage:\n  s3: {bucket: a}\n  cache: {blobdescriptor: inmemory}\n")); err != nil {
		t.Error(err)
	}
}
