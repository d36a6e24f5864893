/* Config loader: YAML files and --set overrides against a schema, every
 * error message (file:line, key, problem), and writing the resolved config. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../cli/config.h"
#include "../cli/train_config.h"
#include "../nn/error.h"
#include "test.h"

/* a small schema with every type */
typedef struct tcfg {
    int n;
    double x;
    int flag;
    char *label;
    int mode;
    ncmi_cfg_ints ids;
    ncmi_cfg_floats pair;
    ncmi_cfg_strings tags;
    int deep;
} tcfg;

static const char *const modes[] = {"fast", "slow", "exact", NULL};
static const ncmi_cfg_key tkeys[] = {
    {"a.n", NCMI_CFG_INT, "3", "an int", offsetof(tcfg, n), NULL, NCMI_CFG_MIN, 1, 0, 0},
    {"a.x", NCMI_CFG_FLOAT, "0.5", "a float", offsetof(tcfg, x), NULL, NCMI_CFG_MIN | NCMI_CFG_MAX_EXCL, 0, 1, 0},
    {"flag", NCMI_CFG_BOOL, "false", "a bool", offsetof(tcfg, flag), NULL, 0, 0, 0, 0},
    {"label", NCMI_CFG_STRING, "hello", "a string", offsetof(tcfg, label), NULL, 0, 0, 0, 0},
    {"a.mode", NCMI_CFG_ENUM, "slow", "an enum", offsetof(tcfg, mode), modes, 0, 0, 0, 0},
    {"b.ids", NCMI_CFG_INT_LIST, "[1, 2]", "ints", offsetof(tcfg, ids), NULL, 0, 0, 0, 0},
    {"b.pair", NCMI_CFG_FLOAT_LIST, "[0.9, 0.999]", "two floats", offsetof(tcfg, pair), NULL, 0, 0, 0, 2},
    {"b.tags", NCMI_CFG_STRING_LIST, "[]", "strings", offsetof(tcfg, tags), NULL, 0, 0, 0, 0},
    {"b.c.deep", NCMI_CFG_INT, "7", "nested two levels", offsetof(tcfg, deep), NULL, 0, 0, 0, 0},
};
static const ncmi_cfg_schema tschema = {"test config", tkeys, (int)(sizeof tkeys / sizeof tkeys[0])};

/* Write text to <tmpdir>/<name>; returns the path (static buffer per call site is fine). */
static const char *write_file(const char *name, const char *text)
{
    static char paths[8][512];
    static int k;
    char *p = paths[k++ % 8];
    snprintf(p, 512, "%s/%s", test_tmpdir(), name);
    FILE *f = fopen(p, "w");
    if (!f) return p;
    fputs(text, f);
    fclose(f);
    return p;
}

/* Load `text` as a file and expect failure with a message equal to
 * "<path>:<expect>" (expect starts with the line number). */
static void expect_file_error(const char *name, const char *text, const char *expect)
{
    tcfg c;
    ncmi_cfg_defaults(&tschema, &c);
    const char *path = write_file(name, text);
    int rc = ncmi_cfg_load_file(&tschema, &c, path);
    char want[1024];
    snprintf(want, sizeof want, "%s:%s", path, expect);
    EXPECT(rc == -1, "%s: accepted", name);
    EXPECT(!strcmp(ncmi_error(), want), "%s:\n      got  '%s'\n      want '%s'", name, ncmi_error(), want);
    ncmi_cfg_free(&tschema, &c);
}

TEST(config_defaults)
{
    tcfg c;
    ncmi_cfg_defaults(&tschema, &c);
    EXPECT(c.n == 3 && c.x == 0.5 && c.flag == 0 && c.mode == 1 && c.deep == 7, "scalars");
    EXPECT(!strcmp(c.label, "hello"), "label %s", c.label);
    EXPECT(c.ids.n == 2 && c.ids.v[0] == 1 && c.ids.v[1] == 2, "ids");
    EXPECT(c.pair.n == 2 && c.pair.v[0] == 0.9 && c.pair.v[1] == 0.999, "pair");
    EXPECT(c.tags.n == 0, "tags");
    EXPECT(!strcmp(ncmi_cfg_enum_name(ncmi_cfg_find(&tschema, "a.mode"), &c), "slow"), "enum name");
    ncmi_cfg_free(&tschema, &c);
    EXPECT(c.label == NULL && c.ids.v == NULL && c.ids.n == 0, "free did not clear");

    /* the training schema's defaults are valid and consistent */
    ncmi_train_config t;
    ncmi_cfg_defaults(&ncmi_train_schema, &t);
    EXPECT(t.lr == 0.1 && t.epochs == 20 && t.hidden.n == 2 && t.betas.n == 2, "train defaults");
    EXPECT(t.eps == 1e-8, "eps %g", t.eps);
    EXPECT(t.optim_name == NCMI_OPTIM_NAME_SGD && t.schedule_kind == NCMI_SCHED_CONSTANT, "enums");
    EXPECT(ncmi_train_config_check(&t) == 0, "defaults fail the check: %s", ncmi_error());
    ncmi_cfg_free(&ncmi_train_schema, &t);
}

TEST(config_load_nested_and_dotted)
{
    tcfg c;
    ncmi_cfg_defaults(&tschema, &c);
    const char *path = write_file("ok.yaml",
                                  "# comment\n"
                                  "a:\n"
                                  "  n: 12\n"
                                  "  x: 1e-3\n"
                                  "  mode: exact\n"
                                  "flag: yes\n"
                                  "label: 'two words'\n"
                                  "b:\n"
                                  "  ids:\n"
                                  "    - 5\n"
                                  "    - -6\n"
                                  "  pair: [0.5, 2]\n"
                                  "  tags: [x, \"y z\"]\n"
                                  "  c: {deep: 9}\n");
    REQUIRE(ncmi_cfg_load_file(&tschema, &c, path) == 0, "%s", ncmi_error());
    EXPECT(c.n == 12 && c.x == 1e-3 && c.mode == 2 && c.flag == 1 && c.deep == 9, "scalars");
    EXPECT(!strcmp(c.label, "two words"), "label %s", c.label);
    EXPECT(c.ids.n == 2 && c.ids.v[0] == 5 && c.ids.v[1] == -6, "ids");
    EXPECT(c.pair.n == 2 && c.pair.v[0] == 0.5 && c.pair.v[1] == 2.0, "pair");
    EXPECT(c.tags.n == 2 && !strcmp(c.tags.v[0], "x") && !strcmp(c.tags.v[1], "y z"), "tags");

    /* dotted keys at the top level, a scalar for a list, an empty section */
    path = write_file("dotted.yaml", "a.n: 4\nb.c.deep: 1\nb.ids: 8\na:\n");
    REQUIRE(ncmi_cfg_load_file(&tschema, &c, path) == 0, "%s", ncmi_error());
    EXPECT(c.n == 4 && c.deep == 1 && c.ids.n == 1 && c.ids.v[0] == 8, "dotted keys");
    EXPECT(c.x == 1e-3, "untouched key changed");

    /* an empty file changes nothing */
    path = write_file("empty.yaml", "# nothing\n");
    EXPECT(ncmi_cfg_load_file(&tschema, &c, path) == 0, "%s", ncmi_error());
    EXPECT(c.n == 4, "empty file changed a key");
    ncmi_cfg_free(&tschema, &c);
}

TEST(config_unknown_key_has_file_line_and_suggestion)
{
    expect_file_error("unk1.yaml", "a:\n  n: 2\n  mdoe: fast\n",
                      "3: unknown key 'a.mdoe' (did you mean 'a.mode'?)");
    expect_file_error("unk2.yaml", "flag: true\n\nzzzzzz: 1\n", "3: unknown key 'zzzzzz'");
    expect_file_error("unk3.yaml", "bb:\n  ids: [1]\n", "1: unknown key 'bb' (did you mean 'b'?)");
    expect_file_error("unk4.yaml", "deep: 3\n", "1: unknown key 'deep' (did you mean 'b.c.deep'?)");

    /* the training schema: the example */
    ncmi_train_config t;
    ncmi_cfg_defaults(&ncmi_train_schema, &t);
    const char *path = write_file("train_unk.yaml", "optim:\n  name: sgd\n  lrr: 0.1\n");
    EXPECT(ncmi_cfg_load_file(&ncmi_train_schema, &t, path) == -1, "accepted");
    char want[600];
    snprintf(want, sizeof want, "%s:3: unknown key 'optim.lrr' (did you mean 'optim.lr'?)", path);
    EXPECT(!strcmp(ncmi_error(), want), "got '%s'", ncmi_error());
    ncmi_cfg_free(&ncmi_train_schema, &t);
}

TEST(config_wrong_types)
{
    expect_file_error("t1.yaml", "a:\n  x: abc\n", "2: key 'a.x': expected a number, got 'abc'");
    expect_file_error("t2.yaml", "a:\n  n: 1.5\n", "2: key 'a.n': expected an integer, got '1.5'");
    expect_file_error("t3.yaml", "flag: maybe\n", "1: key 'flag': expected true or false, got 'maybe'");
    expect_file_error("t4.yaml", "label: [a, b]\n", "1: key 'label': expected a string, got a list");
    expect_file_error("t5.yaml", "a:\n  mode: fsat\n",
                      "2: key 'a.mode': expected one of fast, slow, exact; got 'fsat' (did you mean 'fast'?)");
    expect_file_error("t6.yaml", "a:\n  mode: quick\n",
                      "2: key 'a.mode': expected one of fast, slow, exact; got 'quick'");
    expect_file_error("t7.yaml", "b:\n  ids: [1, two]\n",
                      "2: key 'b.ids': element 2: expected an integer, got 'two'");
    expect_file_error("t8.yaml", "b:\n  pair: [1, 2, 3]\n",
                      "2: key 'b.pair': expected a list of 2 numbers, got 3");
    expect_file_error("t9.yaml", "a: 5\n", "1: key 'a' is a section: expected a mapping of its keys, got '5'");
    expect_file_error("t10.yaml", "a:\n  x:\n", "2: key 'a.x': expected a number, got nothing");
    expect_file_error("t11.yaml", "a:\n  n: 99999999999\n",
                      "2: key 'a.n': expected an integer, got '99999999999'");
    expect_file_error("t12.yaml", "- 1\n- 2\n", "1: expected a mapping of keys at the top level, got a list");
    expect_file_error("t13.yaml", "flag: true\nflag: false\n", "2: duplicate key 'flag' (first set at line 1)");
}

TEST(config_bounds)
{
    expect_file_error("r1.yaml", "a:\n  n: 0\n", "2: key 'a.n': value must be >= 1, got '0'");
    expect_file_error("r2.yaml", "a:\n  x: 1.0\n", "2: key 'a.x': value must be in [0, 1), got '1.0'");
    ncmi_train_config t;
    ncmi_cfg_defaults(&ncmi_train_schema, &t);
    EXPECT(ncmi_cfg_set(&ncmi_train_schema, &t, "optim.lr=0") == -1, "lr 0 accepted");
    EXPECT(!strcmp(ncmi_error(), "--set: key 'optim.lr': value must be > 0, got '0'"), "got '%s'",
           ncmi_error());
    EXPECT(ncmi_cfg_set(&ncmi_train_schema, &t, "model.hidden=[8, 0]") == -1, "width 0 accepted");
    EXPECT(strstr(ncmi_error(), "element must be >= 1") != NULL, "got '%s'", ncmi_error());
    /* cross-key checks */
    EXPECT(ncmi_cfg_set(&ncmi_train_schema, &t, "schedule.milestones=[10, 5]") == 0, "%s", ncmi_error());
    EXPECT(ncmi_train_config_check(&t) == -1 && strstr(ncmi_error(), "increasing"), "got '%s'",
           ncmi_error());
    /* Nesterov without momentum: a config error, not the optimizer's internal check (an abort) */
    EXPECT(ncmi_cfg_set(&ncmi_train_schema, &t, "schedule.milestones=[5, 10]") == 0, "%s", ncmi_error());
    EXPECT(ncmi_cfg_set(&ncmi_train_schema, &t, "optim.nesterov=true") == 0, "%s", ncmi_error());
    EXPECT(ncmi_train_config_check(&t) == 0, "nesterov with momentum 0.9: %s", ncmi_error());
    EXPECT(ncmi_cfg_set(&ncmi_train_schema, &t, "optim.momentum=0") == 0, "%s", ncmi_error());
    EXPECT(ncmi_train_config_check(&t) == -1 && strstr(ncmi_error(), "key 'optim.nesterov'") &&
               strstr(ncmi_error(), "optim.momentum > 0"),
           "got '%s'", ncmi_error());
    /* the linear-probe grid: at most 8 values per axis */
    EXPECT(ncmi_cfg_set(&ncmi_train_schema, &t, "lp.grid_lr=[0.1, 1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]") == 0, "%s",
           ncmi_error());
    EXPECT(ncmi_train_config_check(&t) == -1 && !strcmp(ncmi_error(), "key 'lp.grid_lr': at most 8 values, got 9"),
           "got '%s'", ncmi_error());
    EXPECT(ncmi_cfg_set(&ncmi_train_schema, &t, "lp.grid_lr=[0.1, 1]") == 0, "%s", ncmi_error());
    EXPECT(ncmi_cfg_set(&ncmi_train_schema, &t, "lp.grid_epochs=[0]") == -1 && strstr(ncmi_error(), "must be >= 1"),
           "epochs 0 in the grid: '%s'", ncmi_error());
    EXPECT(ncmi_cfg_set(&ncmi_train_schema, &t, "optim.name=adamw") == 0, "%s", ncmi_error());
    EXPECT(ncmi_train_config_check(&t) == 0, "adamw ignores optim.nesterov: %s", ncmi_error());
    ncmi_cfg_free(&ncmi_train_schema, &t);
}

TEST(config_invalid_yaml_and_missing_file)
{
    tcfg c;
    ncmi_cfg_defaults(&tschema, &c);
    const char *path = write_file("bad.yaml", "a:\n  n: 1\n  x: [1, 2\nflag: true\n");
    EXPECT(ncmi_cfg_load_file(&tschema, &c, path) == -1, "accepted");
    char want[600];
    snprintf(want, sizeof want, "%s:", path);
    EXPECT(!strncmp(ncmi_error(), want, strlen(want)) && strstr(ncmi_error(), "invalid YAML: "),
           "got '%s'", ncmi_error());
    /* libyaml's own problem text comes through, with a line number */
    int line = 0;
    sscanf(ncmi_error() + strlen(want), "%d", &line);
    EXPECT(line >= 3 && line <= 5, "line %d in '%s'", line, ncmi_error());

    path = write_file("tab.yaml", "a:\n\tn: 1\n");
    EXPECT(ncmi_cfg_load_file(&tschema, &c, path) == -1, "tab accepted");
    snprintf(want, sizeof want, "%s:2: invalid YAML: found character that cannot start any token", path);
    EXPECT(!strncmp(ncmi_error(), want, strlen(want)), "got '%s'", ncmi_error());

    path = write_file("two.yaml", "flag: true\n---\nflag: false\n");
    EXPECT(ncmi_cfg_load_file(&tschema, &c, path) == -1, "two documents accepted");
    EXPECT(strstr(ncmi_error(), "second YAML document") != NULL, "got '%s'", ncmi_error());

    char missing[512];
    snprintf(missing, sizeof missing, "%s/no-such-config.yaml", test_tmpdir());
    EXPECT(ncmi_cfg_load_file(&tschema, &c, missing) == -1, "missing file accepted");
    snprintf(want, sizeof want, "cannot read config file '%s': No such file or directory", missing);
    EXPECT(!strcmp(ncmi_error(), want), "got '%s'", ncmi_error());
    ncmi_cfg_free(&tschema, &c);
}

TEST(config_set_overrides)
{
    tcfg c;
    ncmi_cfg_defaults(&tschema, &c);
    EXPECT(ncmi_cfg_set(&tschema, &c, "a.n=42") == 0, "%s", ncmi_error());
    EXPECT(ncmi_cfg_set(&tschema, &c, "b.ids=[60,120]") == 0, "%s", ncmi_error());
    EXPECT(ncmi_cfg_set(&tschema, &c, "label=a=b") == 0, "%s", ncmi_error());
    EXPECT(ncmi_cfg_set(&tschema, &c, "b.c={deep: 11}") == 0, "%s", ncmi_error());
    EXPECT(ncmi_cfg_set(&tschema, &c, "flag=on") == 0, "%s", ncmi_error());
    EXPECT(ncmi_cfg_set(&tschema, &c, "b.tags=") == 0, "%s", ncmi_error());
    EXPECT(c.n == 42 && c.ids.n == 2 && c.ids.v[0] == 60 && c.ids.v[1] == 120, "values");
    EXPECT(!strcmp(c.label, "a=b") && c.deep == 11 && c.flag == 1 && c.tags.n == 0, "values 2");

    struct { const char *set, *msg; } bad[] = {
        {"a.nn=3", "--set: unknown key 'a.nn' (did you mean 'a.n'?)"},
        {"nothing", "--set: expected key=value, got 'nothing'"},
        {"a.x=abc", "--set: key 'a.x': expected a number, got 'abc'"},
        {"a.mode=medium", "--set: key 'a.mode': expected one of fast, slow, exact; got 'medium'"},
        {"b.ids=[1,", NULL},
        {"a.n=", "--set: key 'a.n': expected an integer, got nothing"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        EXPECT(ncmi_cfg_set(&tschema, &c, bad[i].set) == -1, "%s accepted", bad[i].set);
        if (bad[i].msg)
            EXPECT(!strcmp(ncmi_error(), bad[i].msg), "%s: got '%s'", bad[i].set, ncmi_error());
        else
            EXPECT(!strncmp(ncmi_error(), "--set: key 'b.ids': invalid YAML value '[1,': ", 44),
                   "%s: got '%s'", bad[i].set, ncmi_error());
    }
    EXPECT(c.n == 42, "a failed --set changed a value");
    ncmi_cfg_free(&tschema, &c);
}

TEST(config_write_roundtrip)
{
    tcfg a, b;
    ncmi_cfg_defaults(&tschema, &a);
    ncmi_cfg_defaults(&tschema, &b);
    /* values that need quoting or careful number formatting */
    EXPECT(ncmi_cfg_set(&tschema, &a, "label='123'") == 0, "%s", ncmi_error());
    EXPECT(ncmi_cfg_set(&tschema, &a, "b.tags=['true', 'x: y', '', plain]") == 0, "%s", ncmi_error());
    EXPECT(ncmi_cfg_set(&tschema, &a, "a.x=1e-5") == 0, "%s", ncmi_error());
    EXPECT(ncmi_cfg_set(&tschema, &a, "b.pair=[0.1, 3]") == 0, "%s", ncmi_error());
    EXPECT(ncmi_cfg_set(&tschema, &a, "a.mode=exact") == 0, "%s", ncmi_error());
    char path[512];
    snprintf(path, sizeof path, "%s/resolved.yaml", test_tmpdir());
    REQUIRE(ncmi_cfg_write_yaml(&tschema, &a, path) == 0, "%s", ncmi_error());
    REQUIRE(ncmi_cfg_load_file(&tschema, &b, path) == 0, "%s", ncmi_error());
    EXPECT(!strcmp(b.label, "123"), "label '%s'", b.label);
    EXPECT(b.tags.n == 4 && !strcmp(b.tags.v[0], "true") && !strcmp(b.tags.v[1], "x: y") &&
               !strcmp(b.tags.v[2], "") && !strcmp(b.tags.v[3], "plain"),
           "tags");
    EXPECT(b.x == 1e-5 && b.pair.v[0] == 0.1 && b.pair.v[1] == 3.0 && b.mode == 2, "numbers");
    EXPECT(b.n == a.n && b.deep == a.deep && b.flag == a.flag && b.ids.n == a.ids.n, "others");

    /* nested layout, sections in schema order, floats that YAML 1.1 readers take as floats */
    char *y = ncmi_cfg_to_yaml(&tschema, &a);
    REQUIRE(y != NULL, "%s", ncmi_error());
    EXPECT(strstr(y, "a:\n  n: 3\n  x: 1.0e-05\n  mode: exact\nflag: false\nlabel: \"123\"\nb:\n") != NULL,
           "layout:\n%s", y);
    EXPECT(strstr(y, "  c:\n    deep: 7\n") != NULL, "nested section:\n%s", y);
    free(y);

    /* PyYAML reads the training config back with the same values (interoperability) */
    ncmi_train_config t;
    ncmi_cfg_defaults(&ncmi_train_schema, &t);
    snprintf(path, sizeof path, "%s/train_resolved.yaml", test_tmpdir());
    REQUIRE(ncmi_cfg_write_yaml(&ncmi_train_schema, &t, path) == 0, "%s", ncmi_error());
    char cmd[1200], *out = NULL;
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c \"import yaml,sys; d=yaml.safe_load(open('%s')); "
             "print(d['optim']['lr'], d['optim']['eps'], d['optim']['betas'], d['model']['hidden'], "
             "repr(d['name']), d['optim']['nesterov'], d['schedule']['milestones'])\"",
             path);
    int rc = test_run(cmd, &out);
    if (rc != 0 && out && strstr(out, "No module named"))
        printf("    (PyYAML not installed: interop check skipped)\n");
    else
        EXPECT(rc == 0 && out && !strcmp(out, "0.1 1e-08 [0.9, 0.999] [64, 64] '' False []\n"),
               "python read: rc %d '%s'", rc, out ? out : "");
    free(out);
    ncmi_cfg_free(&ncmi_train_schema, &t);
    ncmi_cfg_free(&tschema, &a);
    ncmi_cfg_free(&tschema, &b);
}

TEST(config_demo_file_loads)
{
    ncmi_train_config t;
    ncmi_cfg_defaults(&ncmi_train_schema, &t);
    int rc = ncmi_cfg_load_file(&ncmi_train_schema, &t, "configs/demo_mlp.yaml");
    EXPECT(rc == 0, "%s", ncmi_error());
    EXPECT(rc || ncmi_train_config_check(&t) == 0, "%s", ncmi_error());
    ncmi_cfg_free(&ncmi_train_schema, &t);
}

TEST(config_edit_distance)
{
    EXPECT(ncmi_edit_distance("", "") == 0, "empty");
    EXPECT(ncmi_edit_distance("lr", "lrr") == 1, "insert");
    EXPECT(ncmi_edit_distance("optim.lr", "optim.rl") == 1, "transposition");
    EXPECT(ncmi_edit_distance("kitten", "sitting") == 3, "kitten");
    EXPECT(ncmi_edit_distance("abc", "") == 3, "delete all");
}
