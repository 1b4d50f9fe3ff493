/* Parameter schemas, YAML trees and the user-facing validation messages.
 * Expected messages are written out in full: their wording is part of the
 * tool's interface. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unlearn/params.h"
#include "yaml_doc.h"

static const ul_param_def schema[] = {
    UL_PARAM_DOUBLE("lr", "0.1", 0, 10, "learning rate"),
    UL_PARAM_DOUBLE("momentum", "0.9", 0, 1, "SGD momentum"),
    UL_PARAM_INT("epochs", "5", 1, 1000, "passes over the data"),
    UL_PARAM_BOOL("nesterov", "false", "Nesterov momentum"),
    UL_PARAM_STRING("tag", "run", "free text"),
    UL_PARAM_ENUM("optimizer", "sgd", "sgd|adam|adamw", "update rule"),
    UL_PARAM_INT_LIST("widths", "[1, 2, 4]", 1, 4096, "width grid"),
    UL_PARAM_DOUBLE_LIST("lambda", "[0.5]", 0, 1, "trade-offs"),
    {"seed", UL_PT_INT, NULL, false, false, 0, 0, NULL, "required, no default"},
};
#define N_SCHEMA (sizeof schema / sizeof schema[0])

static ul_params *new_params(void)
{
    ul_error e = {0};
    ul_params *p = ul_params_new(schema, N_SCHEMA, &e);
    ck_assert_msg(p != NULL, "ul_params_new failed: %s", e.msg);
    return p;
}

/* Macros rather than functions so a failure reports the test's line. */
#define SET_OK(p, name, text)                                                        \
    do {                                                                             \
        ul_error e_ = {0};                                                           \
        int rc_ = ul_params_set((p), (name), (text), &e_);                           \
        ck_assert_msg(rc_ == 0, "set %s=%s failed: %s", (name), (text), e_.msg);     \
    } while (0)

#define SET_ERR(p, name, text, expected)                                             \
    do {                                                                             \
        ul_error e_ = {0};                                                           \
        int rc_ = ul_params_set((p), (name), (text), &e_);                           \
        ck_assert_int_eq(rc_, UL_EINVAL);                                            \
        ck_assert_str_eq(e_.msg, (expected));                                        \
    } while (0)

#define FORMAT_IS(p, name, quote, expected)                                          \
    do {                                                                             \
        char b_[256];                                                                \
        ck_assert_int_eq(ul_params_format((p), (name), (quote), b_, sizeof b_), 0);  \
        ck_assert_str_eq(b_, (expected));                                            \
    } while (0)

/* ---- params ------------------------------------------------------------- */

START_TEST(test_defaults)
{
    ul_params *p = new_params();
    ck_assert_double_eq(ul_params_double(p, "lr"), 0.1);
    ck_assert_double_eq(ul_params_double(p, "momentum"), 0.9);
    ck_assert_int_eq(ul_params_int(p, "epochs"), 5);
    ck_assert(!ul_params_bool(p, "nesterov"));
    ck_assert_str_eq(ul_params_string(p, "tag"), "run");
    ck_assert_str_eq(ul_params_string(p, "optimizer"), "sgd");
    const double *w = NULL;
    ck_assert_uint_eq(ul_params_list(p, "widths", &w), 3);
    ck_assert_double_eq(w[0], 1);
    ck_assert_double_eq(w[1], 2);
    ck_assert_double_eq(w[2], 4);
    ck_assert_uint_eq(ul_params_list(p, "lambda", &w), 1);
    ck_assert_double_eq(w[0], 0.5);
    /* The required key stays unset until given. */
    ck_assert_str_eq(ul_params_missing(p), "seed");
    SET_OK(p, "seed", "7");
    ck_assert_ptr_null(ul_params_missing(p));
    ck_assert_int_eq(ul_params_int(p, "seed"), 7);
    size_t n = 0;
    ck_assert_ptr_eq(ul_params_schema(p, &n), schema);
    ck_assert_uint_eq(n, N_SCHEMA);
    ul_params_free(p);
}
END_TEST

START_TEST(test_parse_each_type)
{
    ul_params *p = new_params();
    SET_OK(p, "epochs", "42");
    ck_assert_int_eq(ul_params_int(p, "epochs"), 42);
    SET_OK(p, "epochs", "+7");
    ck_assert_int_eq(ul_params_int(p, "epochs"), 7);
    SET_OK(p, "seed", "-3");
    ck_assert_int_eq(ul_params_int(p, "seed"), -3);
    SET_OK(p, "seed", "9007199254740993"); /* 2^53+1: ints are not squeezed through double */
    ck_assert(ul_params_int(p, "seed") == INT64_C(9007199254740993));

    SET_OK(p, "lr", "5e-4");
    ck_assert_double_eq(ul_params_double(p, "lr"), 5e-4);
    SET_OK(p, "lr", ".5");
    ck_assert_double_eq(ul_params_double(p, "lr"), 0.5);
    SET_OK(p, "lr", "1");
    ck_assert_double_eq(ul_params_double(p, "lr"), 1.0);
    SET_OK(p, "lr", "2.");
    ck_assert_double_eq(ul_params_double(p, "lr"), 2.0);
    SET_OK(p, "lr", "1E+0");
    ck_assert_double_eq(ul_params_double(p, "lr"), 1.0);

    static const char *const truthy[] = {"true", "TRUE", "Yes", "on"};
    static const char *const falsy[] = {"false", "No", "OFF"};
    for (size_t k = 0; k < 4; k++) {
        SET_OK(p, "nesterov", truthy[k]);
        ck_assert_msg(ul_params_bool(p, "nesterov"), "'%s' should be true", truthy[k]);
        if (k < 3) {
            SET_OK(p, "nesterov", falsy[k]);
            ck_assert_msg(!ul_params_bool(p, "nesterov"), "'%s' should be false", falsy[k]);
        }
    }

    SET_OK(p, "tag", "  hello, world [x] ");
    ck_assert_str_eq(ul_params_string(p, "tag"), "  hello, world [x] ");
    SET_OK(p, "optimizer", "adamw");
    ck_assert_str_eq(ul_params_string(p, "optimizer"), "adamw");

    const double *v = NULL;
    SET_OK(p, "lambda", "[0, 2.5e-1,1]");
    ck_assert_uint_eq(ul_params_list(p, "lambda", &v), 3);
    ck_assert_double_eq(v[0], 0.0);
    ck_assert_double_eq(v[1], 0.25);
    ck_assert_double_eq(v[2], 1.0);
    SET_OK(p, "lambda", "0.75"); /* a scalar is a one-element list */
    ck_assert_uint_eq(ul_params_list(p, "lambda", &v), 1);
    ck_assert_double_eq(v[0], 0.75);
    SET_OK(p, "lambda", "[ ]");
    ck_assert_uint_eq(ul_params_list(p, "lambda", &v), 0);
    SET_OK(p, "widths", "[8, 16, 4096]");
    ck_assert_uint_eq(ul_params_list(p, "widths", &v), 3);
    ck_assert_double_eq(v[2], 4096.0);
    SET_OK(p, "widths", "32");
    ck_assert_uint_eq(ul_params_list(p, "widths", &v), 1);
    ck_assert_double_eq(v[0], 32.0);
    ul_params_free(p);
}
END_TEST

START_TEST(test_set_errors)
{
    ul_params *p = new_params();
    SET_ERR(p, "epochs", "1.5", "expected an integer for 'epochs', got '1.5'");
    SET_ERR(p, "epochs", "1e3", "expected an integer for 'epochs', got '1e3'");
    SET_ERR(p, "epochs", "", "expected an integer for 'epochs', got an empty value");
    SET_ERR(p, "seed", "99999999999999999999",
            "value 99999999999999999999 does not fit in a 64-bit integer for 'seed'");
    SET_ERR(p, "lr", "fast", "expected a number for 'lr', got 'fast'");
    SET_ERR(p, "lr", "nan", "expected a number for 'lr', got 'nan'");
    SET_ERR(p, "lr", "inf", "expected a number for 'lr', got 'inf'");
    SET_ERR(p, "lr", "0x10", "expected a number for 'lr', got '0x10'");
    SET_ERR(p, "lr", "1e", "expected a number for 'lr', got '1e'");
    SET_ERR(p, "lr", ".", "expected a number for 'lr', got '.'");
    SET_ERR(p, "nesterov", "maybe", "expected true or false for 'nesterov', got 'maybe'");
    SET_ERR(p, "nesterov", "1", "expected true or false for 'nesterov', got '1'");
    SET_ERR(p, "momentum", "1.5", "value 1.5 is out of range [0, 1] for 'momentum'");
    SET_ERR(p, "momentum", "-0.1", "value -0.1 is out of range [0, 1] for 'momentum'");
    SET_ERR(p, "epochs", "0", "value 0 is out of range [1, 1000] for 'epochs'");
    SET_ERR(p, "optimizer", "adm",
            "expected one of sgd, adam, adamw for 'optimizer', got 'adm' (did you mean 'adam'?)");
    SET_ERR(p, "optimizer", "Adam",
            "expected one of sgd, adam, adamw for 'optimizer', got 'Adam' (did you mean 'adam'?)");
    SET_ERR(p, "optimizer", "rmsprop",
            "expected one of sgd, adam, adamw for 'optimizer', got 'rmsprop'");
    SET_ERR(p, "widths", "[1, x]", "expected an integer for item 2 of 'widths', got 'x'");
    SET_ERR(p, "widths", "[1, 0]", "value 0 is out of range [1, 4096] for item 2 of 'widths'");
    SET_ERR(p, "widths", "[1, 2", "expected a list like [1, 2] for 'widths', got '[1, 2'");
    SET_ERR(p, "widths", "[1, [2, 3]]",
            "expected an integer for item 2 of 'widths', got '[2, 3]'");
    SET_ERR(p, "widths", "[1,, 2]",
            "expected an integer for item 2 of 'widths', got an empty value");
    SET_ERR(p, "widths", "[9007199254740993]",
            "value 9007199254740993 is too large for item 1 of 'widths' "
            "(list integers are limited to +/-2^53)");
    SET_ERR(p, "widths", "5000", "value 5000 is out of range [1, 4096] for 'widths'");
    SET_ERR(p, "lambda", "[0.5, 2]", "value 2 is out of range [0, 1] for item 2 of 'lambda'");
    SET_ERR(p, "lamda", "0.5", "unknown parameter 'lamda' (did you mean 'lambda'?)");
    SET_ERR(p, "zzz", "0.5", "unknown parameter 'zzz'");
    /* A failed set leaves the previous value in place. */
    ck_assert_double_eq(ul_params_double(p, "momentum"), 0.9);
    ck_assert_int_eq(ul_params_int(p, "epochs"), 5);
    const double *w = NULL;
    ck_assert_uint_eq(ul_params_list(p, "widths", &w), 3);
    ck_assert_str_eq(ul_params_string(p, "optimizer"), "sgd");
    ul_params_free(p);
}
END_TEST

START_TEST(test_half_open_range)
{
    static const ul_param_def defs[] = {
        {"pos", UL_PT_DOUBLE, "1", true, false, 0, 0, NULL, "min only"},
        {"neg", UL_PT_INT, "-1", false, true, 0, 0, NULL, "max only"},
    };
    ul_error e = {0};
    ul_params *p = ul_params_new(defs, 2, &e);
    ck_assert_msg(p != NULL, "%s", e.msg);
    SET_OK(p, "pos", "1e300");
    SET_ERR(p, "pos", "-1", "value -1 is out of range [0, inf) for 'pos'");
    SET_ERR(p, "neg", "3", "value 3 is out of range (-inf, 0] for 'neg'");
    ul_params_free(p);
}
END_TEST

START_TEST(test_getters_wrong_type)
{
    ul_params *p = new_params();
    ck_assert_int_eq(ul_params_int(p, "lr"), 0);
    ck_assert_double_eq(ul_params_double(p, "epochs"), 0.0);
    ck_assert(!ul_params_bool(p, "nope"));
    ck_assert_ptr_null(ul_params_string(p, "epochs"));
    ck_assert_int_eq(ul_params_int(p, "seed"), 0); /* unset */
    static const double dummy = 1.0;
    const double *v = &dummy;
    ck_assert_uint_eq(ul_params_list(p, "lr", &v), 0);
    ck_assert_ptr_null(v);
    char buf[16];
    ck_assert_int_eq(ul_params_format(p, "nope", false, buf, sizeof buf), UL_EINVAL);
    ul_params_free(p);
}
END_TEST

START_TEST(test_schema_validation)
{
    static const ul_param_def bad_default[] = {
        UL_PARAM_DOUBLE("ok", "1", 0, 2, ""),
        UL_PARAM_DOUBLE("dropout", "2", 0, 1, ""),
    };
    static const ul_param_def bad_enum[] = {UL_PARAM_ENUM("opt", "rms", "sgd|adam", "")};
    static const ul_param_def twice[] = {UL_PARAM_BOOL("a", "true", ""),
                                         UL_PARAM_BOOL("a", "false", "")};
    static const ul_param_def no_choices[] = {UL_PARAM_ENUM("opt", "sgd", NULL, "")};
    ul_error e = {0};
    ck_assert_ptr_null(ul_params_new(bad_default, 2, &e));
    ck_assert_int_eq(e.code, UL_EINVAL);
    ck_assert_str_eq(e.msg, "parameter 'dropout': invalid default '2': "
                            "value 2 is out of range [0, 1] for 'dropout'");
    ck_assert_ptr_null(ul_params_new(bad_enum, 1, &e));
    ck_assert_str_eq(e.msg, "parameter 'opt': invalid default 'rms': "
                            "expected one of sgd, adam for 'opt', got 'rms'");
    ck_assert_ptr_null(ul_params_new(twice, 2, &e));
    ck_assert_str_eq(e.msg, "parameter 'a' is declared twice in the schema");
    ck_assert_ptr_null(ul_params_new(no_choices, 1, &e));
    ck_assert_str_eq(e.msg, "enum parameter 'opt' declares no choices");
    ul_params *empty = ul_params_new(NULL, 0, &e);
    ck_assert_ptr_nonnull(empty);
    char buf[8];
    ck_assert_int_eq(ul_params_to_json(empty, buf, sizeof buf), 0);
    ck_assert_str_eq(buf, "{}");
    ul_params_free(empty);
}
END_TEST

START_TEST(test_format_exact)
{
    ul_params *p = new_params();
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"0.1", "0.1"},           {"5e-4", "0.0005"}, {"1e-5", "1e-05"},
        {"3", "3"},               {"0.3", "0.3"},     {".5", "0.5"},
        /* 1/3 needs 16 digits, 0.1+0.2 needs 17 to read back exactly. */
        {"0.3333333333333333", "0.3333333333333333"},
        {"0.30000000000000004", "0.30000000000000004"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        SET_OK(p, "lr", cases[k].in);
        FORMAT_IS(p, "lr", false, cases[k].out);
    }
    FORMAT_IS(p, "epochs", false, "5");
    FORMAT_IS(p, "nesterov", false, "false");
    FORMAT_IS(p, "widths", false, "[1, 2, 4]");
    SET_OK(p, "lambda", "[0.25, 1e-3]");
    FORMAT_IS(p, "lambda", false, "[0.25, 0.001]");
    SET_OK(p, "tag", "say \"hi\"\\\n");
    FORMAT_IS(p, "tag", false, "say \"hi\"\\\n");
    FORMAT_IS(p, "tag", true, "\"say \\\"hi\\\"\\\\\\n\"");
    FORMAT_IS(p, "optimizer", true, "\"sgd\"");
    FORMAT_IS(p, "seed", false, "null");
    char small[4];
    ck_assert_int_eq(ul_params_format(p, "widths", false, small, sizeof small), UL_EINVAL);
    ck_assert_str_eq(small, "[1,"); /* truncated but terminated */
    ul_params_free(p);
}
END_TEST

/* Format, parse the text again, and require the identical double. */
START_TEST(test_format_round_trip)
{
    static const char *const values[] = {"0.1", "5e-4", "1e-5", "3", "0.7", "2.675",
                                         "1e-300", "4.9406564584124654e-324",
                                         "9.999999999999999", "1.0000000000000002"};
    static const ul_param_def defs[] = {
        {"x", UL_PT_DOUBLE, "0", false, false, 0, 0, NULL, ""},
        {"xs", UL_PT_DOUBLE_LIST, "[]", false, false, 0, 0, NULL, ""},
    };
    ul_error e = {0};
    ul_params *p = ul_params_new(defs, 2, &e);
    ck_assert_msg(p != NULL, "%s", e.msg);
    for (size_t k = 0; k < sizeof values / sizeof values[0]; k++) {
        char buf[64];
        SET_OK(p, "x", values[k]);
        double before = ul_params_double(p, "x");
        ck_assert_double_eq(before, strtod(values[k], NULL));
        ck_assert_int_eq(ul_params_format(p, "x", false, buf, sizeof buf), 0);
        SET_OK(p, "x", buf);
        double after = ul_params_double(p, "x");
        ck_assert_msg(memcmp(&before, &after, sizeof before) == 0,
                      "%s formatted as %s reads back as %.17g", values[k], buf, after);
        ck_assert_msg(strlen(buf) <= strlen(values[k]) + 2, "%s formatted as long %s", values[k],
                      buf);
    }
    char list_text[256];
    SET_OK(p, "xs", "[0.1, 5e-4, 1e-5, 3, -2.5]");
    ck_assert_int_eq(ul_params_format(p, "xs", false, list_text, sizeof list_text), 0);
    ck_assert_str_eq(list_text, "[0.1, 0.0005, 1e-05, 3, -2.5]");
    SET_OK(p, "xs", list_text);
    const double *xs = NULL;
    ck_assert_uint_eq(ul_params_list(p, "xs", &xs), 5);
    ck_assert_double_eq(xs[0], 0.1);
    ck_assert_double_eq(xs[1], 5e-4);
    ck_assert_double_eq(xs[2], 1e-5);
    ck_assert_double_eq(xs[3], 3.0);
    ck_assert_double_eq(xs[4], -2.5);
    ul_params_free(p);
}
END_TEST

START_TEST(test_to_json)
{
    ul_params *p = new_params();
    char buf[512];
    ck_assert_int_eq(ul_params_to_json(p, buf, sizeof buf), 0);
    ck_assert_str_eq(buf, "{\"lr\": 0.1, \"momentum\": 0.9, \"epochs\": 5, \"nesterov\": false, "
                          "\"tag\": \"run\", \"optimizer\": \"sgd\", \"widths\": [1, 2, 4], "
                          "\"lambda\": [0.5], \"seed\": null}");
    SET_OK(p, "seed", "11");
    SET_OK(p, "tag", "a\tb");
    SET_OK(p, "lr", "1e-5");
    SET_OK(p, "nesterov", "yes");
    ck_assert_int_eq(ul_params_to_json(p, buf, sizeof buf), 0);
    ck_assert_str_eq(buf, "{\"lr\": 1e-05, \"momentum\": 0.9, \"epochs\": 5, \"nesterov\": true, "
                          "\"tag\": \"a\\tb\", \"optimizer\": \"sgd\", \"widths\": [1, 2, 4], "
                          "\"lambda\": [0.5], \"seed\": 11}");
    char small[10];
    ck_assert_int_eq(ul_params_to_json(p, small, sizeof small), UL_EINVAL);
    ck_assert_str_eq(small, "{\"lr\": 1e");
    ul_params_free(p);
}
END_TEST

START_TEST(test_clone_is_deep)
{
    ul_params *p = new_params();
    SET_OK(p, "tag", "original");
    ul_params *c = ul_params_clone(p);
    ck_assert_ptr_nonnull(c);
    SET_OK(p, "tag", "changed");
    SET_OK(p, "widths", "[64]");
    ck_assert_str_eq(ul_params_string(c, "tag"), "original");
    const double *w = NULL;
    ck_assert_uint_eq(ul_params_list(c, "widths", &w), 3);
    ck_assert_double_eq(w[2], 4.0);
    ck_assert_str_eq(ul_params_missing(c), "seed");
    ul_params_free(p);
    ck_assert_str_eq(ul_params_string(c, "optimizer"), "sgd");
    ul_params_free(c);
}
END_TEST

START_TEST(test_did_you_mean)
{
    static const char *const keys[] = {"lr", "momentum", "lambda", "epochs", "widths"};
    ck_assert_str_eq(ul_did_you_mean("lamda", keys, 5), "lambda");
    ck_assert_str_eq(ul_did_you_mean("momentun", keys, 5), "momentum");
    ck_assert_str_eq(ul_did_you_mean("LR", keys, 5), "lr");         /* case-insensitive */
    ck_assert_str_eq(ul_did_you_mean("epoch", keys, 5), "epochs");  /* insertion */
    ck_assert_str_eq(ul_did_you_mean("widhts", keys, 5), "widths"); /* 2 edits, limit 6/3=2 */
    ck_assert_str_eq(ul_did_you_mean("lx", keys, 5), "lr");         /* short key: limit 1 */
    ck_assert_ptr_null(ul_did_you_mean("xy", keys, 5));             /* 2 edits > limit 1 */
    ck_assert_str_eq(ul_did_you_mean("mmntum", keys, 5), "momentum"); /* 2 edits, limit 2 */
    ck_assert_ptr_null(ul_did_you_mean("mmntm", keys, 5));            /* 3 edits > limit 1 */
    ck_assert_ptr_null(ul_did_you_mean("batch_size", keys, 5));
    ck_assert_ptr_null(ul_did_you_mean("lamda", keys, 0));
    static const char *const tie[] = {"abcd", NULL, "abce"};
    ck_assert_str_eq(ul_did_you_mean("abcx", tie, 3), "abcd"); /* ties: first wins */
}
END_TEST

/* ---- YAML --------------------------------------------------------------- */

static ul_yaml_doc *load(const char *text)
{
    ul_yaml_doc *doc = NULL;
    ul_error e = {0};
    int rc = ul_yaml_load_string(text, "cfg.yaml", &doc, &e);
    ck_assert_msg(rc == 0, "load failed: %s", e.msg);
    return doc;
}

#define LOAD_ERR(text, expected)                                                    \
    do {                                                                            \
        ul_yaml_doc *d_ = (ul_yaml_doc *)1;                                         \
        ul_error e_ = {0};                                                          \
        ck_assert_int_eq(ul_yaml_load_string((text), "cfg.yaml", &d_, &e_), UL_EINVAL); \
        ck_assert_ptr_null(d_);                                                     \
        ck_assert_str_eq(e_.msg, (expected));                                       \
    } while (0)

/* Fills a fresh block from the map at `section` of text; expects failure. */
#define FILL_ERR(text, section, expected)                                           \
    do {                                                                            \
        ul_yaml_doc *d_ = load(text);                                               \
        ul_params *p_ = new_params();                                               \
        ul_error e_ = {0};                                                          \
        const ul_yaml_node *m_ = ul_yaml_get(d_->root, (section));                  \
        int rc_ = ul_yaml_fill_params(d_, m_, (section), p_, &e_);                  \
        ck_assert_int_eq(rc_, UL_EINVAL);                                           \
        ck_assert_str_eq(e_.msg, (expected));                                       \
        ul_params_free(p_);                                                         \
        ul_yaml_free(d_);                                                           \
    } while (0)

START_TEST(test_yaml_tree_positions)
{
    ul_yaml_doc *doc = load("# comment\n"
                            "method:\n"
                            "  name: \"scrub\"\n"
                            "  params:\n"
                            "    lr: 0.5\n"
                            "    widths:\n"
                            "      - 8\n"
                            "      - 16\n"
                            "grid: [1, [2, 3], 'x']\n");
    ck_assert_str_eq(doc->path, "cfg.yaml");
    const ul_yaml_node *root = doc->root;
    ck_assert_int_eq(root->kind, UL_YAML_MAP);
    ck_assert_uint_eq(root->n, 2);
    ck_assert_str_eq(root->keys[0], "method");
    ck_assert_int_eq(root->key_line[0], 2);
    ck_assert_int_eq(root->key_col[0], 1);
    const ul_yaml_node *method = ul_yaml_get(root, "method");
    ck_assert_int_eq(method->kind, UL_YAML_MAP);
    ck_assert_int_eq(method->line, 3);
    ck_assert_int_eq(method->col, 3);
    const ul_yaml_node *name = ul_yaml_get(method, "name");
    ck_assert_str_eq(name->scalar, "scrub");
    ck_assert(name->quoted);
    ck_assert_int_eq(name->line, 3);
    ck_assert_int_eq(name->col, 9);
    const ul_yaml_node *params = ul_yaml_get(method, "params");
    ck_assert_int_eq(ul_yaml_key_index(method, "params"), 1);
    ck_assert_int_eq(method->key_line[1], 4);
    ck_assert_int_eq(method->key_col[1], 3);
    const ul_yaml_node *lr = ul_yaml_get(params, "lr");
    ck_assert(!lr->quoted);
    ck_assert_int_eq(lr->line, 5);
    ck_assert_int_eq(lr->col, 9);
    const ul_yaml_node *widths = ul_yaml_get(params, "widths");
    ck_assert_int_eq(widths->kind, UL_YAML_SEQ);
    ck_assert_uint_eq(widths->n, 2);
    ck_assert_int_eq(widths->items[1]->line, 8);
    ck_assert_int_eq(widths->items[1]->col, 9);
    ck_assert_ptr_null(ul_yaml_get(params, "nope"));
    ck_assert_int_eq(ul_yaml_key_index(params, "nope"), -1);
    ck_assert_ptr_null(ul_yaml_get(lr, "x")); /* not a map */

    char buf[64];
    ck_assert_int_eq(ul_yaml_to_text(widths, buf, sizeof buf), 0);
    ck_assert_str_eq(buf, "[8, 16]");
    ck_assert_int_eq(ul_yaml_to_text(ul_yaml_get(root, "grid"), buf, sizeof buf), 0);
    ck_assert_str_eq(buf, "[1, [2, 3], x]");
    ck_assert_int_eq(ul_yaml_to_text(lr, buf, sizeof buf), 0);
    ck_assert_str_eq(buf, "0.5");
    ck_assert_int_eq(ul_yaml_to_text(method, buf, sizeof buf), UL_EINVAL);
    ck_assert_int_eq(ul_yaml_to_text(widths, buf, 5), UL_EINVAL);
    ul_yaml_free(doc);
}
END_TEST

START_TEST(test_yaml_empty_and_multi_doc)
{
    ul_yaml_doc *doc = load("");
    ck_assert_ptr_null(doc->root);
    ul_yaml_free(doc);
    doc = load("# only a comment\n---\n");
    ck_assert_ptr_null(doc->root);
    ul_yaml_free(doc);
    LOAD_ERR("a: 1\n---\nb: 2\n", "cfg.yaml:2:1: only one YAML document per file is supported");
}
END_TEST

START_TEST(test_yaml_load_errors)
{
    LOAD_ERR("lr: 0.1\nepochs: 3\nlr: 0.2\n",
             "cfg.yaml:3:1: duplicate key 'lr' (first defined at line 1, column 1)");
    LOAD_ERR("m:\n  a: 1\n  b: 2\n  a: 3\n",
             "cfg.yaml:4:3: duplicate key 'a' (first defined at line 2, column 3)");
    /* libyaml's own wording, with our 1-based position of the offending ':'. */
    LOAD_ERR("a: 1\nb: c: d\n",
             "cfg.yaml:2:5: YAML syntax error: mapping values are not allowed in this context");
    LOAD_ERR("a: [1, 2\nb: 3\n",
             "cfg.yaml:2:2: YAML syntax error: did not find expected ',' or ']' "
             "(while parsing a flow sequence)");
    LOAD_ERR("base: &b 1\nother: *b\n",
             "cfg.yaml:1:7: anchors (&name) are not supported");
    LOAD_ERR("? [a, b]\n: 1\n",
             "cfg.yaml:1:3: a mapping key must be a plain scalar, not a sequence");

    ul_yaml_doc *doc = (ul_yaml_doc *)1;
    ul_error e = {0};
    ck_assert_int_eq(ul_yaml_load_file("/nonexistent/dir/pipeline.yaml", &doc, &e), UL_EIO);
    ck_assert_ptr_null(doc);
    ck_assert_str_eq(e.msg, "/nonexistent/dir/pipeline.yaml: cannot open: "
                            "No such file or directory");
}
END_TEST

START_TEST(test_yaml_load_file)
{
    char path[] = "/tmp/ul_test_params_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    FILE *fp = fdopen(fd, "w");
    fputs("params:\n  lr: 0.25\n  lamda: 1\n", fp);
    fclose(fp);
    ul_yaml_doc *doc = NULL;
    ul_error e = {0};
    int rc = ul_yaml_load_file(path, &doc, &e);
    ck_assert_msg(rc == 0, "%s", e.msg);
    ul_params *p = new_params();
    rc = ul_yaml_fill_params(doc, ul_yaml_get(doc->root, "params"), "params", p, &e);
    ck_assert_int_eq(rc, UL_EINVAL);
    char expected[256];
    snprintf(expected, sizeof expected,
             "%s:3:3: unknown key 'lamda' in params (did you mean 'lambda'?)", path);
    ck_assert_str_eq(e.msg, expected);
    ul_params_free(p);
    ul_yaml_free(doc);
    remove(path);
}
END_TEST

START_TEST(test_fill_ok)
{
    ul_yaml_doc *doc = load("method:\n"
                            "  params:\n"
                            "    lr: 5e-4\n"
                            "    epochs: 12\n"
                            "    nesterov: on\n"
                            "    optimizer: adam\n"
                            "    tag: \"quoted, text\"\n"
                            "    widths:\n"
                            "      - 8\n"
                            "      - 16\n"
                            "    lambda: [0.1, 0.9]\n"
                            "    seed: 3\n");
    ul_params *p = new_params();
    ul_error e = {0};
    const ul_yaml_node *m = ul_yaml_get(ul_yaml_get(doc->root, "method"), "params");
    int rc = ul_yaml_fill_params(doc, m, "method.params", p, &e);
    ck_assert_msg(rc == 0, "%s", e.msg);
    ck_assert_double_eq(ul_params_double(p, "lr"), 5e-4);
    ck_assert_double_eq(ul_params_double(p, "momentum"), 0.9); /* default kept */
    ck_assert_int_eq(ul_params_int(p, "epochs"), 12);
    ck_assert(ul_params_bool(p, "nesterov"));
    ck_assert_str_eq(ul_params_string(p, "optimizer"), "adam");
    ck_assert_str_eq(ul_params_string(p, "tag"), "quoted, text");
    const double *v = NULL;
    ck_assert_uint_eq(ul_params_list(p, "widths", &v), 2);
    ck_assert_double_eq(v[0], 8);
    ck_assert_double_eq(v[1], 16);
    ck_assert_uint_eq(ul_params_list(p, "lambda", &v), 2);
    ck_assert_double_eq(v[1], 0.9);
    ck_assert_int_eq(ul_params_int(p, "seed"), 3);
    ul_params_free(p);
    ul_yaml_free(doc);
}
END_TEST

START_TEST(test_fill_errors)
{
    FILL_ERR("top: 1\n"
             "params:\n"
             "  seed: 1\n"
             "  lamda: 0.5\n",
             "params", "cfg.yaml:4:3: unknown key 'lamda' in params (did you mean 'lambda'?)");
    FILL_ERR("params:\n  batch_size: 8\n", "params",
             "cfg.yaml:2:3: unknown key 'batch_size' in params (expected one of: lr, momentum, "
             "epochs, nesterov, tag, optimizer, widths, lambda, seed)");
    FILL_ERR("params:\n  seed: 1\n  epochs: ten\n", "params",
             "cfg.yaml:3:11: params.epochs: expected an integer for 'epochs', got 'ten'");
    FILL_ERR("params:\n  momentum:   1.5\n", "params",
             "cfg.yaml:2:15: params.momentum: value 1.5 is out of range [0, 1] for 'momentum'");
    FILL_ERR("params:\n  optimizer: adm\n", "params",
             "cfg.yaml:2:14: params.optimizer: expected one of sgd, adam, adamw for "
             "'optimizer', got 'adm' (did you mean 'adam'?)");
    FILL_ERR("params:\n  momentum:\n    value: 1\n", "params",
             "cfg.yaml:3:5: 'momentum' in params must be a number, not a mapping");
    FILL_ERR("params:\n  widths: {a: 1}\n", "params",
             "cfg.yaml:2:11: 'widths' in params must be a list of integers, not a mapping");
    FILL_ERR("params:\n  lr: [0.1, 0.2]\n", "params",
             "cfg.yaml:2:7: 'lr' in params must be a number, not a list");
    FILL_ERR("params:\n  widths:\n    - 8\n    - x\n", "params",
             "cfg.yaml:3:5: params.widths: expected an integer for item 2 of 'widths', got 'x'");
    FILL_ERR("other: 1\n"
             "params:\n"
             "  lr: 0.2\n",
             "params", "cfg.yaml:3:3: params: missing required key 'seed'");
    /* An empty section still needs its required keys; an absent one has no
     * position of its own beyond the file. */
    FILL_ERR("params:\n", "params", "cfg.yaml:1:8: params: missing required key 'seed'");
    FILL_ERR("params: ~\n", "params", "cfg.yaml:1:9: params: missing required key 'seed'");
    FILL_ERR("other: 1\n", "params", "cfg.yaml: params: missing required key 'seed'");
    FILL_ERR("params: 3\n", "params", "cfg.yaml:1:9: params must be a mapping");
}
END_TEST

START_TEST(test_check_keys)
{
    static const char *const allowed[] = {"name", "params", "grid"};
    ul_yaml_doc *doc = load("method:\n  name: scrub\n  grd: [1]\n");
    ul_error e = {0};
    const ul_yaml_node *m = ul_yaml_get(doc->root, "method");
    ck_assert_int_eq(ul_yaml_check_keys(doc, m, "method", allowed, 3, &e), UL_EINVAL);
    ck_assert_str_eq(e.msg, "cfg.yaml:3:3: unknown key 'grd' in method (did you mean 'grid'?)");
    ck_assert_int_eq(ul_yaml_check_keys(doc, m, "method", allowed, 1, &e), UL_EINVAL);
    ck_assert_str_eq(e.msg, "cfg.yaml:3:3: unknown key 'grd' in method (expected one of: name)");
    ck_assert_int_eq(ul_yaml_check_keys(doc, doc->root, "pipeline",
                                        (const char *const[]){"method"}, 1, &e), 0);
    ck_assert_int_eq(ul_yaml_check_keys(doc, ul_yaml_get(m, "name"), "method.name", allowed, 3,
                                        &e), UL_EINVAL);
    ck_assert_str_eq(e.msg, "cfg.yaml:2:9: method.name must be a mapping");
    ul_yaml_free(doc);
}
END_TEST

START_TEST(test_yaml_errorf)
{
    ul_yaml_doc *doc = load("a: 1\n");
    ul_error e = {0};
    ck_assert_int_eq(ul_yaml_errorf(&e, doc, 12, 5, "bad %s", "thing"), UL_EINVAL);
    ck_assert_str_eq(e.msg, "cfg.yaml:12:5: bad thing");
    ul_yaml_free(doc);
}
END_TEST

static Suite *params_suite(void)
{
    Suite *s = suite_create("params");
    TCase *tp = tcase_create("params");
    tcase_add_test(tp, test_defaults);
    tcase_add_test(tp, test_parse_each_type);
    tcase_add_test(tp, test_set_errors);
    tcase_add_test(tp, test_half_open_range);
    tcase_add_test(tp, test_getters_wrong_type);
    tcase_add_test(tp, test_schema_validation);
    tcase_add_test(tp, test_format_exact);
    tcase_add_test(tp, test_format_round_trip);
    tcase_add_test(tp, test_to_json);
    tcase_add_test(tp, test_clone_is_deep);
    tcase_add_test(tp, test_did_you_mean);
    suite_add_tcase(s, tp);
    TCase *ty = tcase_create("yaml");
    tcase_add_test(ty, test_yaml_tree_positions);
    tcase_add_test(ty, test_yaml_empty_and_multi_doc);
    tcase_add_test(ty, test_yaml_load_errors);
    tcase_add_test(ty, test_yaml_load_file);
    tcase_add_test(ty, test_fill_ok);
    tcase_add_test(ty, test_fill_errors);
    tcase_add_test(ty, test_check_keys);
    tcase_add_test(ty, test_yaml_errorf);
    suite_add_tcase(s, ty);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(params_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
