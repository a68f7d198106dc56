# inferbench: benchmark Transformer inference across runtimes, precisions and batch sizes.
from snakemake.utils import min_version

min_version("9.0")


# A user's --configfile stands on its own: the default config is read only when
# none is given (Snakemake would merge the user's file over it, so a key the user
# left out, such as model.name, would silently come from the default).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/report_common.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/onnx.smk"
include: "workflow/rules/calibration.smk"
include: "workflow/rules/build.smk"
include: "workflow/rules/bench.smk"
include: "workflow/rules/accuracy.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/compare.smk"
include: "workflow/rules/serve_common.smk"
include: "workflow/rules/serve.smk"


rule all:
    input:
        all_outputs(),
        serving_outputs(),
