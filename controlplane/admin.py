"""Admin of API tokens: a token's plaintext is shown once, when it is made."""

from django import forms
from django.contrib import admin, messages

from . import services
from .admin_mixins import ServiceAdminMixin, ServiceFormMixin
from .models import ApiToken

admin.site.site_header = "Cohort"
admin.site.site_title = "Cohort"
admin.site.index_title = "Console"


class ApiTokenCreateForm(ServiceFormMixin, forms.ModelForm):
    class Meta:
        model = ApiToken
        fields = ("user", "name")

    def service_call(self, cleaned_data):
        token, self.plaintext = services.api_token_create(
            user=cleaned_data["user"], name=cleaned_data["name"]
        )
        return token


class ApiTokenNameForm(ServiceFormMixin, forms.ModelForm):
    class Meta:
        model = ApiToken
        fields = ("name",)

    def service_call(self, cleaned_data):
        return services.api_token_rename(token=self.instance, name=cleaned_data["name"])


@admin.register(ApiToken)
class ApiTokenAdmin(ServiceAdminMixin, admin.ModelAdmin):
    list_display = ("prefix", "user", "name", "created_at", "last_used_at", "revoked_at")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter),)
    search_fields = ("prefix", "name", "user__username")
    list_select_related = ("user",)
    actions = ["revoke"]

    def get_form(self, request, obj=None, **kwargs):
        kwargs["form"] = ApiTokenCreateForm if obj is None else ApiTokenNameForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("user", "name")
        return ("prefix", "user", "name", "created_at", "last_used_at", "revoked_at")

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else ("prefix", "user", "created_at", "last_used_at", "revoked_at")

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)  # the form's service saved it
        if not change:
            self.message_user(
                request,
                f"New API token for {obj.user}: {form.plaintext} — copy it now, it is not "
                "shown again.",
                messages.WARNING,
            )

    def service_delete(self, obj):
        services.api_token_delete(token=obj)

    @admin.action(description="Revoke the selected tokens", permissions=["change"])
    def revoke(self, request, queryset):
        for token in queryset:
            services.api_token_revoke(token=token)
        self.message_user(request, f"Revoked {queryset.count()} token(s).", messages.SUCCESS)
