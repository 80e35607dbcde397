// Reference encoder for the schematic canonical-YAML tests: decodes each body with
// gopkg.in/yaml.v3 (strict, first document only) into the factory's schematic struct
// and prints the re-encoded bytes, so the Rust emitter is judged by go-yaml itself.
//
// Input on stdin: one hex-encoded body per line. Output: one line per body,
// "ok <hex of yaml.Marshal>" or "err <message>".
package main

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"strings"

	"gopkg.in/yaml.v3"
)

type BootloaderKind int

var bootloaderNames = []string{"none", "dual-boot", "sd-boot", "grub"}

func (k BootloaderKind) MarshalText() ([]byte, error) { return []byte(bootloaderNames[k]), nil }

func (k *BootloaderKind) UnmarshalText(text []byte) error {
	for i, n := range bootloaderNames {
		if strings.EqualFold(n, string(text)) {
			*k = BootloaderKind(i)
			return nil
		}
	}
	return fmt.Errorf("%s does not belong to BootloaderKind values", text)
}

type Schematic struct {
	Owner         string        `yaml:"owner,omitempty"`
	Overlay       Overlay       `yaml:"overlay,omitempty"`
	Customization Customization `yaml:"customization"`
}

type Customization struct {
	EmbeddedMachineConfiguration string                  `yaml:"embeddedMachineConfiguration,omitempty"`
	ExtraKernelArgs              []string                `yaml:"extraKernelArgs,omitempty"`
	Meta                         []MetaValue             `yaml:"meta,omitempty"`
	SystemExtensions             SystemExtensions        `yaml:"systemExtensions,omitempty"`
	Bootloader                   BootloaderKind          `yaml:"bootloader,omitempty"`
	SecureBoot                   SecureBootCustomization `yaml:"secureboot,omitempty"`
	DiskImage                    DiskImageCustomization  `yaml:"diskImage,omitempty"`
}

type MetaValue struct {
	Key   uint8  `yaml:"key"`
	Value string `yaml:"value"`
}

type SystemExtensions struct {
	OfficialExtensions []string `yaml:"officialExtensions,omitempty"`
}

type Overlay struct {
	Image   string         `yaml:"image"`
	Name    string         `yaml:"name"`
	Options map[string]any `yaml:"options,omitempty"`
}

type SecureBootCustomization struct {
	EnrollKeys                   string `yaml:"enrollKeys,omitempty"`
	IncludeWellKnownCertificates bool   `yaml:"includeWellKnownCertificates,omitempty"`
}

type DiskImageCustomization struct {
	SectorSize uint `yaml:"sectorSize,omitempty"`
}

func one(body []byte) (out []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(body))
	dec.KnownFields(true)
	var s Schematic
	if err := dec.Decode(&s); err != nil {
		return nil, err
	}
	return yaml.Marshal(&s)
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<24)
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	for in.Scan() {
		body, err := hex.DecodeString(in.Text())
		if err != nil {
			fmt.Fprintf(w, "err bad hex\n")
			continue
		}
		out, err := one(body)
		if err != nil {
			fmt.Fprintf(w, "err %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		} else {
			fmt.Fprintf(w, "ok %s\n", hex.EncodeToString(out))
		}
	}
}
